"""The encoder's broadcast temporal attention computes what the fused per-patch path computes."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from neurocine.models.fmri_encoder import Attention, FMRIEncoder, SpatioTemporalBlock

# Pairwise-distinct sizes: batch 3, patches 5, width 12 (3 heads of 4); windows 2 and 3.
B, P, C, HEADS = 3, 5, 12, 3


@pytest.mark.parametrize("window", [2, 3])
def test_forward_over_window_equals_forward_per_patch(window):
    torch.manual_seed(0)
    attention = Attention(C, HEADS, dropout=0.25).train()
    x = torch.randn(B, window, P, C, requires_grad=True)
    torch.manual_seed(1)
    out = attention.forward_over_window(x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    torch.manual_seed(1)  # same draws: dropout must zero the same elements
    per_patch, _ = attention(rearrange(x, "b w p c -> (b p) w c"))
    expected = rearrange(per_patch, "(b p) w c -> b w p c", b=B)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
    assert (out == 0).sum() > 0  # dropout was active
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=1e-5)


def test_encoder_takes_the_broadcast_path_for_short_windows_only(monkeypatch):
    calls = []
    original = Attention.forward_over_window

    def counted(self, x):
        calls.append(tuple(x.shape))
        return original(self, x)

    monkeypatch.setattr(Attention, "forward_over_window", counted)
    encoder = FMRIEncoder(
        num_voxels=61,
        window=2,
        patch_size=8,
        embed_dim=C,
        depth=2,
        num_heads=HEADS,
        out_tokens=5,
        out_dim=14,
        clip_dim=10,
        dropout=0.2,
    )
    encoder.init_weights(torch.Generator().manual_seed(0))
    encoder.train()
    fmri = torch.randn(B, 2, 61, generator=torch.Generator().manual_seed(0))
    outputs = {}
    for limit in (SpatioTemporalBlock.broadcast_max_window, 1):
        monkeypatch.setattr(SpatioTemporalBlock, "broadcast_max_window", limit)
        torch.manual_seed(2)
        outputs[limit] = encoder(fmri).embedding
    assert calls == [(B, 2, 8, C)] * 2  # both blocks on the default setting, none with limit 1
    broadcast, fused = outputs.values()
    torch.testing.assert_close(broadcast, fused, atol=1e-5, rtol=1e-5)
    # attention maps still come from the explicit path
    encoder.eval()
    out = encoder(fmri, output_attentions=True)
    assert out.temporal_attentions[0].shape == (B, 8, HEADS, 2, 2)
    assert len(calls) == 2
