"""The random trials behind every n-way metric, vectorised over samples and trials.

An n-way trial draws ``n_draws`` distinct distractors uniformly from a pool; the target wins
when fewer than ``top_k`` of them outrank it. Only *how many* distractors outrank the target
matters, so a sample is summarised by its pool size and its number of "beaters" (pool items
that outrank the target), and a trial draws the distractors one at a time without replacement,
tracking only whether each one is a beater. This is the same random process as picking
``n_draws`` indices and comparing scores (the number of beaters drawn is hypergeometric), at a
cost of O(N · trials · n_draws) instead of O(N · trials · pool).
"""

from __future__ import annotations

import torch

from neurocine.errors import DataError


def default_generator(generator: torch.Generator | None) -> torch.Generator:
    """The generator to draw from: ``generator``, or a fresh CPU one seeded with 0."""
    if generator is not None:
        return generator
    return torch.Generator().manual_seed(0)


def win_fraction(
    n_beaters: torch.Tensor,
    pool: torch.Tensor,
    n_draws: int,
    num_trials: int,
    top_k: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fraction of trials each sample wins.

    Parameters
    ----------
    n_beaters : int tensor of shape (N,)
        Pool items that outrank the sample's target (ties count as outranking).
    pool : int tensor of shape (N,)
        Number of items the distractors are drawn from (the target is not in it).
    n_draws : int
        Distractors per trial (``n_way - 1``), distinct within a trial.
    num_trials : int
        Independent trials per sample.
    top_k : int
        A trial is won when fewer than ``top_k`` drawn distractors outrank the target.
    generator : torch.Generator, optional
        Source of the draws (a CPU one seeded with 0 when None).

    Returns
    -------
    float32 tensor of shape (N,) on the device of ``n_beaters``.
    """
    if n_draws < 0 or num_trials < 1 or top_k < 1:
        raise DataError(
            f"need n_way >= 1, num_trials >= 1 and top_k >= 1, got n_way={n_draws + 1}, "
            f"num_trials={num_trials}, top_k={top_k}"
        )
    if top_k > n_draws:
        raise DataError(f"top_k={top_k} must be smaller than n_way={n_draws + 1}")
    if int(pool.min()) < n_draws:
        raise DataError(
            f"n_way={n_draws + 1} needs {n_draws} distractors but a sample has only "
            f"{int(pool.min())} candidates"
        )
    gen = default_generator(generator)
    out_device = n_beaters.device
    gen_device = gen.device
    n = n_beaters.shape[0]
    beaters_left = n_beaters.to(gen_device, torch.float32)[:, None].expand(n, num_trials).clone()
    pool_left = pool.to(gen_device, torch.float32)[:, None].expand(n, num_trials).clone()
    drawn = torch.zeros(n, num_trials, dtype=torch.float32, device=gen_device)
    for _ in range(n_draws):
        u = torch.rand(n, num_trials, generator=gen, device=gen_device)
        # floor(u * pool_left) is a uniform index into the items left; the first beaters_left
        # indices stand for the beaters.
        hit = (torch.floor(u * pool_left) < beaters_left).float()
        drawn += hit
        beaters_left -= hit
        pool_left -= 1.0
    wins = (drawn < top_k).float().mean(dim=1)
    return wins.to(out_device)
