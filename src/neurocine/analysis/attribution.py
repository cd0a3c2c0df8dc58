"""Which voxels a stage-1 encoder relies on: per-voxel importance for its contrastive score.

The score of an fMRI window ``x_i`` is how much closer its embedding lies to its own CLIP target
than to the targets of the other ``N`` windows (cosines of L2-normalised vectors):

    s(x_i) = Σ_t w_t · (cos(z_i, e_t,i) − mean_j cos(z_i, e_t,j)) / Σ_t w_t,   z_i = f(x_i),

over the targets ``t`` (CLIP image, text) with stage-1 weights ``w_t`` (docs/design.md §5).
It is positive when the window retrieves its clip better than chance and, unlike InfoNCE, needs
no temperature and is a sum over windows, so it can be batched freely. Maps are ``[V]``:

- ``attention``: the mean attention each voxel's patch receives (:func:`received_attention`);
  1/P everywhere for uniform attention.
- ``gradient``: gradient × input, ``mean_i,w x · ∂s/∂x`` over windows ``i`` and TRs ``w`` —
  signed, so a voxel that only adds noise averages to about 0.
- ``integrated_gradients``: Sundararajan et al. (2017) from the all-zero window (the value a
  masked voxel takes), ``x · mean_k ∂s/∂x(k/K · x)`` at the midpoints of ``K`` steps, averaged
  like the gradient; per window its voxels sum to ``s(x) − s(0)``.
- ``occlusion``: the reference. Zero one patch of voxels in every TR of every window; the
  patch's voxels get the mean drop of the score, ``mean_i s(x_i) − s(x_i without the patch)``.
  Patches are cubes of the MNI grid (:func:`spatial_patches`, 10 mm: neighbouring voxels
  share signal, so a patch holds one kind of voxel far more often than the encoder's tokens of
  consecutive voxels do), or the tokens when the voxels have no coordinates.
- ``activation_pattern``: Haufe et al. (2014): not an attribution of the score but the
  forward model of the encoder's output, the norm of each voxel's covariance with the
  embedding over the windows (:func:`activation_pattern`); unsigned, and needs no targets.

Every function takes the encoder and tensors and returns a numpy array; nothing here reads
files.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from neurocine.errors import ConfigError

METHODS = ("attention", "gradient", "integrated_gradients", "occlusion", "activation_pattern")
PATTERN_STATISTICS = ("covariance", "correlation")


class ContrastiveScore:
    """The per-window score ``s`` of the module docstring for a fixed set of targets.

    Parameters
    ----------
    targets : mapping of str to Tensor of shape (N, D)
        The CLIP targets of the ``N`` windows (``clip_image``, ``clip_text``).
    weights : mapping of str to float
        Weight of each target; targets without a positive weight are left out.
    """

    def __init__(self, targets: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> None:
        used = {k: v for k, v in targets.items() if weights.get(k, 0.0) > 0}
        if not used:
            raise ConfigError(
                f"attribution: no target with a positive weight among {sorted(targets)} "
                f"(weights {dict(weights)})"
            )
        self.own = {k: F.normalize(v.float(), dim=-1) for k, v in used.items()}
        self.mean = {k: v.mean(0) for k, v in self.own.items()}
        total = sum(weights[k] for k in used)
        self.weights = {k: weights[k] / total for k in used}

    def __call__(self, encoder, fmri: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Scores ``[B]`` of the windows ``fmri [B, W, V]``, which are rows ``rows`` of the set."""
        z = F.normalize(encoder(fmri.float()).embedding.float(), dim=-1)
        per_target = [
            w * (z * (self.own[k][rows] - self.mean[k])).sum(-1) for k, w in self.weights.items()
        ]
        return torch.stack(per_target).sum(0)


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield torch.arange(start, min(n, start + batch_size))


@torch.no_grad()
def received_attention(encoder, fmri: torch.Tensor, block: int | None = -1) -> np.ndarray:
    """Mean attention each voxel's patch receives, ``[V]`` (NaN where no patch covers a voxel).

    Parameters
    ----------
    encoder : neurocine.models.fmri_encoder.FMRIEncoder
    fmri : Tensor of shape (B, W, V)
    block : int or None, default=-1
        Which transformer block (negative from the end); None averages all blocks.
    """
    encoder.eval()
    out = encoder(fmri.float(), output_attentions=True)
    maps = out.spatial_attentions
    if block is not None:
        if not -len(maps) <= block < len(maps):
            raise ConfigError(f"block {block}: the encoder has {len(maps)} blocks")
        maps = (maps[block],)
    # [B, W, heads, P_query, P_key] → mean over everything but the key patch.
    per_patch = torch.stack([m.mean(dim=(0, 1, 2, 3)) for m in maps]).mean(dim=0)
    return encoder.patch_to_voxels(per_patch).cpu().numpy()


def integrated_gradients(
    encoder,
    fmri: torch.Tensor,
    score: ContrastiveScore,
    steps: int = 16,
    batch_size: int = 64,
) -> np.ndarray:
    """Integrated gradients from the zero window, mean over windows and TRs, ``[V]``.

    Parameters
    ----------
    encoder : FMRIEncoder
    fmri : Tensor of shape (N, W, V)
        The windows whose targets ``score`` holds, in the same order.
    score : ContrastiveScore
    steps : int, default=16
        ``K``; 1 is gradient × input at ``x / 2``. Use :func:`gradient_x_input` for the plain one.
    batch_size : int, default=64
    """
    if steps < 1:
        raise ConfigError(f"attribution: steps={steps} must be at least 1")
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    return _gradient_map(encoder, fmri, score, alphas, batch_size)


def gradient_x_input(
    encoder, fmri: torch.Tensor, score: ContrastiveScore, batch_size: int = 64
) -> np.ndarray:
    """Gradient × input ``x · ∂s/∂x``, mean over windows and TRs, ``[V]`` (arguments as above)."""
    return _gradient_map(encoder, fmri, score, torch.ones(1), batch_size)


def _gradient_map(encoder, fmri, score, alphas: torch.Tensor, batch_size: int) -> np.ndarray:
    encoder.eval()
    n, _, v = fmri.shape
    total = torch.zeros(v, dtype=torch.float64)
    for rows in _batches(n, batch_size):
        x = fmri[rows].float()
        grads = torch.zeros_like(x)
        for alpha in alphas:
            scaled = (alpha * x).requires_grad_(True)
            (grad,) = torch.autograd.grad(score(encoder, scaled, rows).sum(), scaled)
            grads += grad
        total += (x * grads / len(alphas)).sum(dim=(0, 1)).double()
    return (total / (n * fmri.shape[1])).numpy()


@torch.no_grad()
def occlusion(
    encoder,
    fmri: torch.Tensor,
    score: ContrastiveScore,
    patches: np.ndarray | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Mean drop of the score when one patch of voxels is zeroed, given to its voxels, ``[V]``.

    Parameters
    ----------
    encoder : FMRIEncoder
    fmri : Tensor of shape (N, W, V)
    score : ContrastiveScore
    patches : ndarray of int, shape (V,), optional
        Patch id of each voxel (e.g. :func:`spatial_patches`); None: the encoder's tokens
        (runs of ``patch_size`` consecutive voxels).
    batch_size : int, default=256
    """
    encoder.eval()
    n, _, v = fmri.shape
    if patches is None:
        patches = np.arange(v) // encoder.config.patch_size
    patches = np.asarray(patches)
    if patches.shape != (v,):
        raise ConfigError(f"attribution: patches has shape {patches.shape}, expected ({v},)")
    ids, inverse = np.unique(patches, return_inverse=True)
    members = [torch.from_numpy(np.flatnonzero(inverse == k)) for k in range(ids.size)]
    drops = np.zeros(ids.size, dtype=np.float64)
    for rows in _batches(n, batch_size):
        x = fmri[rows].float()
        base = score(encoder, x, rows)
        for k, voxels in enumerate(members):
            occluded = x.clone()
            occluded[..., voxels] = 0.0
            drops[k] += (base - score(encoder, occluded, rows)).sum().item()
    return drops[inverse] / n


@torch.no_grad()
def activation_pattern(
    encoder,
    fmri: torch.Tensor,
    tr: int | None = None,
    statistic: str = "covariance",
    whiten: bool = False,
    batch_size: int = 256,
) -> np.ndarray:
    """The activation pattern of the encoder's embedding, one value per voxel, ``[V]``.

    Haufe et al. (2014), "On the interpretation of weight vectors of linear models in
    multivariate neuroimaging", NeuroImage 87:96–110: a decoder's weights or gradients (its
    *filters*) also weight voxels that carry only noise, to cancel noise they share with
    signal voxels, so they do not say where the decoded signal is. The forward model does: the
    covariance of each input with the decoder's output over the samples, ``A = Cov(x, z)``
    ``[V, D]``, times ``Cov(z)⁻¹`` for several outputs. For a nonlinear encoder the same
    reading applies to its outputs ``z = f(x)``, the embedding ``[N, D]`` of the windows. A
    voxel's importance is the norm of its row, ``‖A_v‖₂``; it is never negative. It shows where
    the encoder's output covaries with the data, not which voxels its score needs: voxels that
    share a signal covary with any projection of the data, an untrained encoder's included.

    Parameters
    ----------
    encoder : FMRIEncoder
    fmri : Tensor of shape (N, W, V)
        The windows, ``N ≥ 2``.
    tr : int or None, default=None
        The TR of the window a voxel's value is read from; None: the mean of the window's TRs.
    statistic : {"covariance", "correlation"}, default="covariance"
        ``correlation`` scales every voxel and embedding dimension to unit variance first.
    whiten : bool, default=False
        Multiply by the pseudo-inverse of ``Cov(z)`` (Haufe's pattern for several outputs).
        Off by default: it lifts the embedding's directions of least variance, which on a
        64-dimensional embedding of a few hundred windows are most of them, to the weight of
        the others (the validation choice, docs/design.md §12).
    batch_size : int, default=256
    """
    n, window, _ = fmri.shape
    if n < 2:
        raise ConfigError(f"activation pattern: needs at least 2 windows, got {n}")
    if tr is not None and not -window <= tr < window:
        raise ConfigError(f"activation pattern: tr={tr} outside the window of {window} TRs")
    if statistic not in PATTERN_STATISTICS:
        raise ConfigError(
            f"activation pattern: statistic '{statistic}': expected one of "
            f"{', '.join(PATTERN_STATISTICS)}"
        )
    encoder.eval()
    z = torch.cat([encoder(fmri[rows].float()).embedding for rows in _batches(n, batch_size)])
    x = (fmri.mean(dim=1) if tr is None else fmri[:, tr]).double()
    x, z = x - x.mean(0), z.double() - z.double().mean(0)
    if statistic == "correlation":
        x, z = (t / t.std(0).clamp_min(1e-12) for t in (x, z))  # constant columns stay 0
    pattern = x.T @ z / (n - 1)
    if whiten:
        pattern = pattern @ torch.linalg.pinv(z.T @ z / (n - 1), hermitian=True)
    return pattern.norm(dim=1).numpy()


def spatial_patches(coords: np.ndarray, size_mm: float = 10.0) -> np.ndarray | None:
    """Patch id ``[V]`` of each voxel: the ``size_mm`` cube of the MNI grid it falls in.

    None when every voxel has the same coordinates (no geometry, e.g. CIFTI vertices of a
    non-standard mesh): occlusion then falls back to the encoder's tokens.
    """
    coords = np.asarray(coords, dtype=np.float64)
    if size_mm <= 0:
        raise ConfigError(f"attribution: size_mm={size_mm} must be positive")
    if coords.size == 0 or np.ptp(coords, axis=0).max() == 0:
        return None
    cells = np.floor(coords / size_mm).astype(np.int64)
    return np.unique(cells, axis=0, return_inverse=True)[1].ravel()


def importance(
    method: str,
    encoder,
    fmri: torch.Tensor,
    score: ContrastiveScore,
    **options,
) -> np.ndarray:
    """The ``[V]`` map of ``method`` (one of :data:`METHODS`); ``options`` go to its function.

    ``activation_pattern`` does not use ``score``.
    """
    if method == "attention":
        return received_attention(encoder, fmri, **options)
    if method == "gradient":
        return gradient_x_input(encoder, fmri, score, **options)
    if method == "integrated_gradients":
        return integrated_gradients(encoder, fmri, score, **options)
    if method == "occlusion":
        return occlusion(encoder, fmri, score, **options)
    if method == "activation_pattern":
        return activation_pattern(encoder, fmri, **options)
    raise ConfigError(f"attribution method '{method}': expected one of {', '.join(METHODS)}")


def signal_auc(values: np.ndarray, signal: np.ndarray) -> float:
    """ROC AUC of ``values`` separating ``signal`` voxels from the others (NaN voxels dropped).

    1 when every signal voxel ranks above every noise voxel, 0.5 at chance (ties count half).
    """
    from sklearn.metrics import roc_auc_score

    values = np.asarray(values, dtype=float)
    signal = np.asarray(signal, dtype=bool)
    if values.shape != signal.shape:
        raise ConfigError(f"signal_auc: values {values.shape} and signal {signal.shape} differ")
    ok = np.isfinite(values)
    if signal[ok].all() or not signal[ok].any():
        raise ConfigError("signal_auc: needs both signal and noise voxels")
    return float(roc_auc_score(signal[ok], values[ok]))
