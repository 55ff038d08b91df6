"""The chains' Gaussian noise from a counter-based generator (Philox4x32-10), for compiled moves.

Why: each SGLD step draws one N(0, 1) number per parameter per chain. torch's CPU generator
(Mersenne Twister) draws them one at a time on one thread, 3.5-5 ns each on the benchmark
machines: on the widest suite case (d 15,200, 4 chains) that is ~0.22 ms of a 1.6 ms step
(docs/benchmarks.md §2k). Philox (Salmon, Moraes, Dror & Shaw, SC 2011; the generator behind
cuRAND, JAX and torch's CUDA streams; it passes TestU01's BigCrush) is a pure function of a
counter and a key, so it is written here in whole-tensor integer operations that the compiled
move (:meth:`lambdascope.llc.compiled.GradientCompiler.move`) fuses into its own loop: vectorized
over the coordinates, spread over the intra-op threads, no noise buffer written and read back.

Each number is a function of (the chain's key, the step, the coordinate) only, so a chain's noise
does not depend on how many chains run beside it or in which groups. Run eagerly, the ~300
integer operations per block cost far more than the Mersenne Twister (tens of ns per number):
the sampler uses this generator only inside a compiled move (``lambdascope.llc.sgld.run_sgld``).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

Tensor = torch.Tensor

__all__ = ["gaussian", "keys_from_words", "philox4x32", "with_noise"]

_MASK = 0xFFFFFFFF
_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
_WEYL = (0x9E3779B9, 0xBB67AE85)  # the key's bump per round
_ROUNDS = 10


def _mulhilo(a: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """(high, low) 32-bit halves of ``a·m`` for ``a`` < 2³² held in int64, without overflowing
    int64: ``a·m = (a·m_hi + ⌊a·m_lo / 2¹⁶⌋)·2¹⁶ + (a·m_lo mod 2¹⁶)`` with every part < 2⁴⁹."""
    low_part = a * (m & 0xFFFF)
    upper = a * (m >> 16) + (low_part >> 16)
    return upper >> 16, ((upper & 0xFFFF) << 16) | (low_part & 0xFFFF)


def philox4x32(c0: Tensor, c1: Tensor, c2: Tensor, c3: Tensor, k0: Tensor, k1: Tensor
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Philox4x32-10 of the 128-bit counter (c0..c3) under the 64-bit key (k0, k1): four
    32-bit words, each an int64 tensor in [0, 2³²). Inputs broadcast; they must lie in [0, 2³²)."""
    for _ in range(_ROUNDS):
        hi0, lo0 = _mulhilo(c0, _MULTIPLIERS[0])
        hi1, lo1 = _mulhilo(c2, _MULTIPLIERS[1])
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _WEYL[0]) & _MASK, (k1 + _WEYL[1]) & _MASK
    return c0, c1, c2, c3


def _uniform(word: Tensor, dtype: torch.dtype) -> Tensor:
    """A 32-bit word as a number in (0, 1) (never 0: its log is taken): its top 24 bits in float32
    (all a float32 holds there), all 32 in float64."""
    if dtype == torch.float64:
        return (word.to(torch.float64) + 0.5) * (2.0 ** -32)
    return ((word >> 8).to(torch.float32) + 0.5) * (2.0 ** -24)


def gaussian(keys: Tensor, step: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    """(chains, dim) independent N(0, 1) numbers for ``step`` (a 0-d int64 tensor, ≥ 0), chain c
    keyed by ``keys[c]`` (two 32-bit words). Coordinates 4j..4j+3 come from the counter
    (j, step mod 2³², ⌊step / 2³²⌋, 0) by Box-Muller on its four words; computed in float64 for a
    float64 ``dtype`` (tails to 6.8 σ), else in float32 (to 5.9 σ, as torch's own float draws) and
    cast to ``dtype``."""
    chains, groups = keys.shape[0], (dim + 3) // 4
    shape = (chains, groups)
    index = torch.arange(groups, dtype=torch.int64, device=keys.device).expand(shape)
    low, high = (step & _MASK).expand(shape), (step >> 32).expand(shape)
    words = philox4x32(index, low, high, torch.zeros_like(index), keys[:, 0:1], keys[:, 1:2])
    work = torch.float64 if dtype == torch.float64 else torch.float32
    u = [_uniform(w, work) for w in words]
    r01, r23 = (torch.sqrt(-2.0 * torch.log(u[0])), torch.sqrt(-2.0 * torch.log(u[2])))
    a01, a23 = (2.0 * math.pi) * u[1], (2.0 * math.pi) * u[3]
    z = torch.stack([r01 * torch.cos(a01), r01 * torch.sin(a01), r23 * torch.cos(a23), r23 * torch.sin(a23)], -1)
    return z.reshape(chains, 4 * groups)[:, :dim].to(dtype)


def keys_from_words(words: list[int], device: torch.device) -> Tensor:
    """(chains, 2) int64 keys, one 64-bit seed word per chain split into two 32-bit halves."""
    return torch.tensor([[w & _MASK, (w >> 32) & _MASK] for w in words], dtype=torch.int64, device=device)


def with_noise(move: Callable[..., Tensor], dim: int) -> Callable[..., Tensor]:
    """``move(g, w, w*, ξ, coef, *rest)`` with ξ drawn here: ``(g, w, w*, keys, step, coef, *rest)``,
    one function of tensors for the compiler to fuse."""
    def noisy(grad: Tensor, w: Tensor, center: Tensor, keys: Tensor, step: Tensor, coef: Tensor,
              *rest: Tensor) -> Tensor:
        return move(grad, w, center, gaussian(keys, step, dim, w.dtype), coef, *rest)
    return noisy
