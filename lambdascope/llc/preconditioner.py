"""A preconditioner for SGLD, re-estimated as the chains stiffen: diagonal, or per weight matrix
in its Kronecker-factored eigenbasis.

Why: on singular models the chains drift along flat directions into stiffer regions (on deep
linear networks tr ∇²L grew elevenfold over a 100,000-step run, docs/benchmarks.md §4u), so the
one step size that keeps the stiffest directions' bias small keeps shrinking, and every
direction, the flat ones included, moves ever more slowly. Any fixed positive-definite M samples
the same posterior with ``w ← w − (ε/2)·M∇U + √ε·M^½ξ``; an M that shrinks the stiff directions'
moves lets ε stay large for the rest.

M is estimated from the gradients the chains see: at stationarity E[∇U ∇Uᵀ] = E[∇²U]
(integration by parts), so the gradients' second moments measure the stiffness (minibatch noise
included, which inflates the bias the same way). Two structures:

- **diagonal**: the stiffness of coordinate i is E[(∂U/∂w_i)²]. Needs nothing of the model, but
  it cannot follow directions that mix coordinates: the slow directions of a deep network are
  its rescaling orbits (W_l → cW_l, W_{l+1} → W_{l+1}/c), which run through coordinates that are
  stiff in other directions (§4w);
- **kronecker**: for each weight matrix G = ∂U/∂W (rows × cols), the rows' and columns' second
  moments S = E[G Gᵀ], T = E[Gᵀ G] factor the curvature as S ⊗ T / tr S (as K-FAC does), whose
  eigenbasis U_S ⊗ U_T is the matrix's own; the stiffness along eigenvector pair (i, j) is
  s_i·t_j / tr S. Other parameters (biases, norms, matrices with a side above
  :data:`MAX_SIDE`) stay diagonal. On deep linear networks this reached in 2,000-10,000 steps
  the level plain SGLD approaches over 50,000-100,000, at 28-70× the plain step (§4v).

Either way M is diagonal in a basis: ``M = R·diag(m)·Rᵀ`` with R the identity except for each
matrix's rotation, and ``m = (max(h, γ) / min max(h, γ))^(−POWER)`` over all directions h: the
flattest (floored at the localization γ, the stiffness every direction has) get exactly 1, so ε
keeps its meaning there and the chains' age Σε stays the flat directions' clock. POWER ½ goes
half way to equalizing the stiffness (a full inverse trusts the noisy estimate too much: measured
on deep linear networks, bench/preconditioned_sgld.py).

M changes only between chunks of a run, each time from the chunks since the last estimate; the
predicted bias of a step (calibration.predicted_bias) keeps its meaning because the sampler's
probes measure the move it made (ε·nβ·tr(M∇²L) along it).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Tensor = torch.Tensor

STRUCTURES = ("diagonal", "kronecker")
POWER = 0.5
MIN_SAMPLES = 400  # scored gradients (steps × chains) an estimate needs
MAX_SIDE = 1024  # a matrix with a longer side stays diagonal: its rotation would cost more than its gradient


@dataclass(frozen=True)
class Block:
    """A weight matrix inside the flat (D,) parameter vector."""

    offset: int
    rows: int
    cols: int

    def of(self, flat: Tensor) -> Tensor:
        """The matrix of each chain, (chains, rows, cols), a view into ``flat`` (chains, D)."""
        return flat[:, self.offset:self.offset + self.rows * self.cols].view(-1, self.rows, self.cols)


def blocks(shapes: Sequence[torch.Size], offsets: Sequence[int]) -> list[Block]:
    """The parameters a Kronecker M rotates: the matrices with both sides in [2, MAX_SIDE]."""
    return [Block(o, s[0], s[1]) for s, o in zip(shapes, offsets)
            if len(s) == 2 and 2 <= min(s) and max(s) <= MAX_SIDE]


class Moments:
    """Σ over scored gradients of ∂U's second moments, per coordinate and (for the given blocks)
    of each matrix's rows and columns; :meth:`state` is plain data (snapshots keep it)."""

    def __init__(self, dim: int, matrices: list[Block], device: torch.device, dtype: torch.dtype):
        """``dtype``: what the products are computed in (the sampled model's); the sums are float64."""
        f64 = torch.float64
        self.blocks, self.dtype = matrices, dtype
        self.squares = torch.zeros(dim, dtype=f64, device=device)
        self.rows = [torch.zeros(b.rows, b.rows, dtype=f64, device=device) for b in matrices]
        self.cols = [torch.zeros(b.cols, b.cols, dtype=f64, device=device) for b in matrices]
        self.samples = 0

    def observe(self, gu: Tensor) -> None:
        """Add each chain's ∇U, (chains, D): products in ``dtype``, sums in float64."""
        gu = gu.to(self.dtype)
        self.squares.add_(gu.square().sum(dim=0, dtype=torch.float64))
        for b, rows, cols in zip(self.blocks, self.rows, self.cols):
            g = b.of(gu)
            rows.add_((g @ g.mT).sum(dim=0))
            cols.add_((g.mT @ g).sum(dim=0))
        self.samples += gu.shape[0]

    def state(self) -> dict:
        return {"samples": self.samples, "squares": self.squares.cpu(),
                "blocks": [[b.offset, b.rows, b.cols] for b in self.blocks],
                "rows": [r.cpu() for r in self.rows], "cols": [c.cpu() for c in self.cols]}


def add(total: dict | None, more: dict) -> dict:
    """Two :meth:`Moments.state` summed (the same parameters), in new tensors."""
    if total is None:
        return {**more, "squares": more["squares"].clone(), "rows": [r.clone() for r in more["rows"]],
                "cols": [c.clone() for c in more["cols"]]}
    return {"samples": total["samples"] + more["samples"], "squares": total["squares"] + more["squares"],
            "blocks": total["blocks"], "rows": [a + b for a, b in zip(total["rows"], more["rows"])],
            "cols": [a + b for a, b in zip(total["cols"], more["cols"])]}


class Preconditioner:
    """M = R·diag(m)·Rᵀ: ``m`` (D,) positive, R the identity but for each block's rotation
    (U_rows, U_cols): a block's matrix V is rotated to U_rowsᵀ·V·U_cols.

    ``bias_ratio`` = tr(M·H) / tr(H) for the curvature H it was estimated from: by how much M
    scales the step's discretization bias (ε/8)·nβ·tr(∇²L) at a given ε (1 when unknown).
    """

    def __init__(self, m: Tensor, bases: Sequence[tuple[Block, Tensor, Tensor]] = (), bias_ratio: float = 1.0):
        if m.dim() != 1 or not bool((m > 0).all()) or not bool(torch.isfinite(m).all()):
            raise ValueError(f"precondition must hold {m.numel()} positive numbers")
        self.m, self.bases, self.bias_ratio = m, list(bases), bias_ratio
        self.root = m.sqrt()

    @property
    def structure(self) -> str:
        return "kronecker" if self.bases else "diagonal"

    def to(self, device: torch.device, dtype: torch.dtype) -> Preconditioner:
        return Preconditioner(self.m.to(device=device, dtype=dtype),
                              [(b, u.to(device=device, dtype=dtype), v.to(device=device, dtype=dtype))
                               for b, u, v in self.bases], self.bias_ratio)

    def rotated(self, flat: Tensor) -> Tensor:
        """``flat`` (chains, D) in M's eigenbasis: Rᵀ·flat (a new tensor)."""
        return _rotated(flat, self.bases, inverse=False)

    def unrotated(self, flat: Tensor) -> Tensor:
        """R·flat (a new tensor): back from M's eigenbasis."""
        return _rotated(flat, self.bases, inverse=True)

    @property
    def blocks(self) -> tuple[Block, ...]:
        """The rotated matrices: with the chains' shapes, what fixes :func:`step_function`'s graph."""
        return tuple(b for b, _, _ in self.bases)

    def tensors(self) -> tuple[Tensor, ...]:
        """M as :func:`step_function` takes it: m, M^½'s diagonal, each block's (U_rows, U_cols)."""
        return (self.m, self.root, *(t for _, u, v in self.bases for t in (u, v)))

    def norm_sq(self, v: Tensor) -> Tensor:
        """vᵀ·M·v per chain, (chains,) float64, for ``v`` (chains, D) (not modified): each
        coordinate's arithmetic in M's dtype (the sampled model's), the sum in float64."""
        rotated = self.rotated(v.to(self.m.dtype)) if self.bases else v.to(self.m.dtype)
        return (rotated.square() * self.m).sum(dim=1, dtype=torch.float64)

    def state(self) -> dict:
        """Plain data for snapshots (:meth:`from_state`)."""
        return {"m": self.m.cpu(), "blocks": [[b.offset, b.rows, b.cols] for b, _, _ in self.bases],
                "rows": [u.cpu() for _, u, _ in self.bases], "cols": [v.cpu() for _, _, v in self.bases],
                "bias_ratio": self.bias_ratio}

    @staticmethod
    def from_state(state: dict) -> Preconditioner:
        bases = [(Block(*b), u, v) for b, u, v in zip(state["blocks"], state["rows"], state["cols"])]
        return Preconditioner(state["m"], bases, state["bias_ratio"])


def _rotated(flat: Tensor, bases: Sequence[tuple[Block, Tensor, Tensor]], inverse: bool) -> Tensor:
    """Rᵀ·flat, or R·flat when ``inverse``, as one new tensor of the pieces (compiled, this is
    the matrices' products and one copy; writing each block into ``flat`` in place becomes a
    scatter of the whole tensor per block once functionalized, slower than eager)."""
    if not bases:
        return flat.clone()
    pieces, at = [], 0
    for b, u, v in bases:
        if b.offset > at:
            pieces.append(flat[:, at:b.offset])
        part = b.of(flat)
        pieces.append((u @ part @ v.mT if inverse else u.mT @ part @ v).flatten(1))
        at = b.offset + b.rows * b.cols
    if at < flat.shape[1]:
        pieces.append(flat[:, at:])
    return torch.cat(pieces, dim=1)


def step_function(blocks: Sequence[Block]) -> Callable[..., Tensor]:
    """One preconditioned SGLD move as a function of tensors only, so that the same code runs
    eagerly and compiled into one graph (:meth:`compiled.GradientCompiler.move`; eagerly a move
    is ~40 small operations, docs/benchmarks.md §2j):

    ``step(g, w, w*, ξ, coef, *M.tensors())`` = ``w + M·(c₀·g + c₁·w + c₂·w*) + c₃·R·diag(√m)·ξ``,
    with ``coef`` = (−(ε/2)·nβ, −(ε/2)·(γ + wd), (ε/2)·γ, √ε) and ξ ~ N(0, I) drawn in M's
    eigenbasis (R·diag(√m)·ξ has covariance M, as M^½·ξ does). Nothing given is modified."""
    blocks = tuple(blocks)

    def step(grad: Tensor, w: Tensor, center: Tensor, noise: Tensor, coef: Tensor, m: Tensor, root: Tensor,
             *factors: Tensor) -> Tensor:
        bases = list(zip(blocks, factors[0::2], factors[1::2]))
        drift = _rotated(grad * coef[0] + w * coef[1] + center * coef[2], bases, inverse=False)
        return w + _rotated(drift * m + noise * root * coef[3], bases, inverse=True)
    return step


def estimate(moments: dict, localization: float, structure: str) -> Preconditioner | None:
    """M from :meth:`Moments.state` summed over some scored gradients; None when there are too few
    to estimate it, the localization is 0 (no floor to scale by) or the moments are not finite.
    ``structure`` "diagonal" ignores the blocks' moments."""
    samples = moments["samples"]
    if samples < MIN_SAMPLES or localization <= 0 or moments["squares"].numel() == 0:
        return None
    curvature = moments["squares"].double() / samples  # E[(∂U)²] along each direction
    bases = []
    if structure == "kronecker":
        for (offset, rows, cols), s_sum, t_sum in zip(moments["blocks"], moments["rows"], moments["cols"]):
            s_mean, t_mean = s_sum.double() / samples, t_sum.double() / samples
            if not bool(torch.isfinite(s_mean).all() and torch.isfinite(t_mean).all()):
                return None
            total = float(torch.diagonal(s_mean).sum())
            if total <= 0:
                continue
            s, u = torch.linalg.eigh(s_mean)
            t, v = torch.linalg.eigh(t_mean)
            block = Block(offset, rows, cols)
            curvature[offset:offset + rows * cols] = (s.clamp(min=0)[:, None] * t.clamp(min=0)[None, :]
                                                      / total).reshape(-1)
            bases.append((block, u, v))
    if not bool(torch.isfinite(curvature).all()):
        return None
    stiffness = curvature.clamp(min=localization)
    m = (stiffness / stiffness.min()).pow(-POWER)
    total = float(curvature.sum())
    ratio = float((m * curvature).sum()) / total if total > 0 else 1.0
    return Preconditioner(m, bases, ratio)
