"""SGLD on the localized, tempered posterior, with all chains stepped together.

The potential is ``U(w) = nβ·L(w) + (γ/2)·‖w − w*‖² + (wd/2)·‖w‖²`` (the last term only with weight
decay, i.e. a Gaussian prior centred at 0). Each step, on a minibatch gradient ``g`` of the MEAN
loss::

    w <- w - (eps/2) * (nbeta * g + gamma * (w - w*) + wd * w) + sqrt(eps) * N(0, I)

Why this layout: small models spend most of a step in Python overhead, so the sampled parameters
of every chain are packed into ONE ``(chains, D)`` tensor, one ``vmap`` of the forward computes
every chain's loss and one autograd pass their gradients; the update is a handful of whole-tensor ops,
whatever the number of parameter tensors. The model is only read through ``functional_call``, so
it is never mutated and exported programs (which have no ``.train()``) work too. If ``vmap``
cannot handle a model, the same update runs with gradients taken chain by chain. Nothing is copied
to the host during a step: losses stay on the device and are checked every ~1% of steps.

Randomness: chain c owns two generators seeded from ``SeedSequence(seed).spawn(chains)[c]``, one
drawing its minibatches (reshuffled epochs), one its noise; both are drawn in blocks of steps
whose length depends only on the batch size and on D. The vmapped and chain-by-chain paths
therefore consume identical random numbers and agree up to floating-point rounding, and a chain's
stream does not depend on how many chains run beside it. Once a run's move is compiled on the
CPU, the noise comes from Philox instead (:mod:`lambdascope.llc.noise`), keyed per chain from the
same seed sequence: a function of (chain, step, coordinate), drawn inside the compiled move.

Acceptance estimate (MALA). Every ``accept_every``-th step the SGLD move w → w' is scored as a
Metropolis-adjusted Langevin proposal: ``α = min(1, exp(−U(w') + U(w) + log q(w|w') − log q(w'|w)))``
with ``q(a|b) = N(a; b − (ε/2)∇U(b), ε·I)``. To keep it cheap for large data sets, U and ∇U at
BOTH w and w' use the SAME minibatch as the step itself (never the full data set): one extra
forward+backward at w' per scored step, and the chain's trajectory is exactly the same with the
estimate on or off (the proposal is always taken; α is only measured). Because the minibatch is
shared, α measures the discretization error of the step on that minibatch's potential; it does
not see the minibatch gradient noise (see ``grad_noise`` below for that). The same extra gradient
yields two cheap by-products used by the step-size calibration:

- ``curvature``: ``nβ·(∇L(w') − ∇L(w))·(w' − w) ≈ ε·nβ·tr ∇²L`` (a Hutchinson probe along the
  step). For a Gaussian posterior, Euler–Maruyama inflates the expected loss energy by
  ``(ε/8)·nβ·tr ∇²L`` to first order in ε, so ``curvature / 8`` estimates the discretization bias of
  λ̂ in λ units;
- ``grad_noise``: ``nβ²·‖∇L_B(w') − ∇L_B'(w')‖²`` for the scored step's minibatch B and the next
  step's B'; minibatch noise inflates the loss energy by ``(ε/8)·nβ²·tr Cov(∇L_B) ≈ ε·grad_noise/16``.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, vmap

from lambdascope.llc import noise as noise_lib
from lambdascope.llc import preconditioner as preconditioner_lib
from lambdascope.llc.chain_groups import saved_bytes_per_chain
from lambdascope.llc.compiled import GradFn, GradientCompiler
from lambdascope.llc.preconditioner import Preconditioner

log = logging.getLogger(__name__)

Tensor = torch.Tensor
LossFn = Callable[[Tensor, Tensor], Tensor]
State = dict[str, Tensor]

# Random numbers are drawn this many values at a time per chain (at most 64 steps' worth).
_BLOCK_VALUES = 1 << 16
_MAX_BLOCK_STEPS = 64


class SamplerDivergedError(RuntimeError):
    """A chain's loss went non-finite or exploded; the message names the chain, the step and the fix."""

    def __init__(self, message: str, *, chain: int = -1, step: int = -1, loss: float = math.nan):
        super().__init__(message)
        self.chain, self.step, self.loss = chain, step, loss


@dataclass(frozen=True)
class SGLDTrace:
    """What one sampling run recorded; every tensor is on the CPU.

    ``accept_steps`` lists the steps whose move was scored; the (chains, len(accept_steps))
    tensors hold, per scored step, the MALA acceptance probability, ``curvature`` and the
    localization energy ``(γ/2)·‖w − w*‖²`` at the step's start. ``grad_noise`` is NaN where the
    scored step was the last one (no next minibatch to compare with).
    """

    # (chains, steps) minibatch loss at the weights each step started from; with run_sgld's
    # ``baseline``, less the minibatch's own loss at w* plus L_n(w*)
    losses: Tensor
    vectorized: bool  # whether the chains ran under vmap
    seconds: float
    accept_steps: Tensor  # (m,) long
    acceptance: Tensor  # (chains, m)
    curvature: Tensor  # (chains, m)
    grad_noise: Tensor  # (chains, m)
    localization_energy: Tensor  # (chains, m)
    final: Tensor  # (chains, D) the chains' last states, flattened, on the sampling device
    # Σ over the scored steps and chains of ∇U's second moments at the step's start (per
    # coordinate, and per weight matrix when asked): lambdascope.llc.preconditioner.Moments.state,
    # what M is estimated from; None when nothing was scored
    moments: dict | None = None
    # (chains, m) nβ·∇L_n(w*)·(w − w*) at each scored step's start: the first-order part of the
    # excess loss owed to w*'s slope (lambdascope.llc.stationarity); None without run_sgld's slope
    slope: Tensor | None = None


def _chain_generators(seed: int, chains: int, device: torch.device) -> tuple[list, list, Tensor]:
    """(batch generators, noise generators, Philox keys (chains, 2)): independent streams per chain."""
    batch, noise, words = [], [], []
    for s in np.random.SeedSequence(seed).spawn(chains):
        a, b, c = (int(v) for v in s.generate_state(3, np.uint64))
        batch.append(torch.Generator(device=device).manual_seed(a))
        noise.append(torch.Generator(device=device).manual_seed(b))
        words.append(c)
    return batch, noise, noise_lib.keys_from_words(words, device)


def static_batch_size(model: torch.nn.Module) -> int | None:
    """The batch size an exported program was specialized to, or None if it takes any batch.

    ``torch.export`` without dynamic shapes bakes the example's batch size into the graph and
    guards it; such a program is a function of exactly that many examples.
    """
    graph = getattr(model, "graph", None)
    if not isinstance(graph, torch.fx.Graph):
        return None
    for node in graph.nodes:
        if node.op == "placeholder":
            val = node.meta.get("val")
            if isinstance(val, Tensor) and val.dim() > 0 and isinstance(val.shape[0], int):
                return val.shape[0]
            return None
    return None


def _dim_size(tensor: Tensor, dim: int) -> int:
    return tensor.shape[dim]


def _attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
               dropout_p: float = 0.0, is_causal: bool = False, *, scale: float | None = None,
               enable_gqa: bool = False) -> Tensor:
    """``scaled_dot_product_attention`` in plain ops: softmax(q·kᵀ·scale + mask)·v.

    The fused kernels the ATen op dispatches to on CPU have no vmap batching rule (every chain
    would run apart) and no double backward (the Hessian's power iteration needs it); these
    ops have both. Same numbers up to float rounding.
    """
    if dropout_p:
        raise ValueError("the exported program applies attention dropout (exported in training mode); "
                         "export it after model.eval()")
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        repeat = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeat, dim=-3), value.repeat_interleave(repeat, dim=-3)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = query @ key.transpose(-2, -1) * scale
    if is_causal:
        keep = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool \
            else scores + attn_mask
    return torch.softmax(scores, dim=-1) @ value


def prepare_for_sampling(model: torch.nn.Module) -> torch.nn.Module:
    """``model``, or for an exported program, a copy whose graph the sampler can batch and
    differentiate twice, with the same numbers:

    - ``aten.sym_size`` (how an export with a dynamic batch dimension reads its batch size before
      reshaping, e.g. into attention heads) reads the tensor's shape instead: vmap has no batching
      rule for it, while under vmap a tensor's shape is already the per-chain one;
    - ``aten.scaled_dot_product_attention`` runs as plain ops (:func:`_attention`).

    A program that applies dropout (exported in training mode) is refused: its loss would be
    random from step to step.
    """
    graph = getattr(model, "graph", None)
    if not isinstance(graph, torch.fx.Graph):
        return model
    for node in graph.nodes:
        if node.op == "call_function" and node.target is torch.ops.aten.dropout.default and \
                len(node.args) > 2 and node.args[2] is True and node.args[1]:
            raise ValueError("the exported program applies dropout (exported in training mode); export "
                             "it after model.eval()")
    swaps = {torch.ops.aten.sym_size.int: _dim_size, torch.ops.aten.scaled_dot_product_attention.default: _attention}
    if not any(n.op == "call_function" and n.target in swaps for n in graph.nodes):
        return model
    model = copy.deepcopy(model)
    for node in model.graph.nodes:
        if node.op == "call_function" and node.target in swaps:
            node.target = swaps[node.target]
    model.recompile()
    return model


def make_forward(model: torch.nn.Module, vectorized: bool) -> Callable[[State, Tensor], Tensor]:
    """``forward(state, x)`` through ``functional_call``, for a batch of any size.

    A program fixed to batch k sees the batch as chunks of k (padded by repeating examples, the
    padding's outputs dropped): mapped with vmap when ``vectorized``, else looped.
    """
    k = static_batch_size(model)

    def call(state: State, xb: Tensor) -> Tensor:
        return functional_call(model, state, (xb,))

    if k is None:
        return call

    def chunked(state: State, xb: Tensor) -> Tensor:
        b = xb.shape[0]
        if b % k:
            xb = xb[torch.arange(b + (-b) % k, device=xb.device) % b]
        chunks = xb.reshape(-1, k, *xb.shape[1:])
        if vectorized:
            out = vmap(call, in_dims=(None, 0))(state, chunks)
        else:
            out = torch.stack([call(state, c) for c in chunks])
        return out.reshape(-1, *out.shape[2:])[:b]

    return chunked


class _Minibatches:
    """Per-chain index streams: each chain walks its own reshuffled epochs, batches span epochs.

    Indices are produced a block of steps at a time, ``(chains, block, batch)``; a chain's stream
    depends only on its generator, not on the block length or on the other chains.
    """

    def __init__(self, n: int, batch_size: int, generators: list[torch.Generator], device: torch.device):
        self.n, self.batch_size, self.generators, self.device = n, batch_size, generators, device
        self.pending = [torch.empty(0, dtype=torch.long, device=device) for _ in generators]

    def block(self, steps: int) -> Tensor:
        need = steps * self.batch_size
        rows = []
        for c, gen in enumerate(self.generators):
            parts, have = [self.pending[c]], self.pending[c].numel()
            while have < need:
                parts.append(torch.randperm(self.n, generator=gen, device=self.device))
                have += self.n
            stream = torch.cat(parts) if len(parts) > 1 else parts[0]
            rows.append(stream[:need])
            self.pending[c] = stream[need:]
        return torch.stack(rows).view(len(self.generators), steps, self.batch_size)


@dataclass(frozen=True)
class _Layout:
    """Where each sampled parameter lives in the flat (D,) vector."""

    names: list[str]
    shapes: list[torch.Size]
    dtypes: list[torch.dtype]
    offsets: list[int]
    sizes: list[int]

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def unflatten(self, flat: Tensor) -> State:
        out = {}
        for name, shape, dtype, o, n in zip(self.names, self.shapes, self.dtypes, self.offsets, self.sizes):
            part = flat[o : o + n].view(shape)
            out[name] = part if part.dtype == dtype else part.to(dtype)
        return out


def _chain_loss(model: torch.nn.Module, layout: _Layout, loss_fn: LossFn, vectorized: bool
                ) -> Callable[[Tensor, State, Tensor, Tensor], Tensor]:
    """``loss(flat, fixed, xb, yb)``: one chain's loss at its flat parameters (D,), the other
    parameters and buffers in ``fixed``."""
    forward = make_forward(model, vectorized)

    def loss(flat: Tensor, fixed: State, xb: Tensor, yb: Tensor) -> Tensor:
        return loss_fn(forward({**layout.unflatten(flat), **fixed}, xb), yb)

    return loss


def _grad_fn(
    model: torch.nn.Module, layout: _Layout, fixed: State, loss_fn: LossFn, vectorized: bool, full_batch: bool,
    per_pass: int | None = None,
) -> GradFn:
    """(flat params (chains, D), x, y) -> (grads (chains, D), losses (chains,)); x, y per chain
    unless full batch.

    The chains' losses come from one ``vmap`` of the forward pass; their gradients from ONE
    ordinary autograd pass over the sum (chains are independent, so the gradient of the sum is
    each chain's own). That is exact and, on small models, about 1.5x faster per step than
    ``vmap(grad(...))``, whose per-op transform overhead dominates there. With ``per_pass`` the
    chains go through in groups of that many (one pass each), bounding the activations held at
    once (see :mod:`lambdascope.llc.chain_groups`).
    """
    chain_loss = _chain_loss(model, layout, loss_fn, vectorized)

    def loss_at(flat: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        return chain_loss(flat, fixed, xb, yb)

    data_dim = None if full_batch else 0
    batched = vmap(loss_at, in_dims=(0, data_dim, data_dim)) if vectorized else None

    def losses_of(leaf: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        if vectorized:
            return batched(leaf, xb, yb)
        return torch.stack([
            loss_at(leaf[c], xb if full_batch else xb[c], yb if full_batch else yb[c])
            for c in range(leaf.shape[0])
        ])

    def one_pass(flat: Tensor, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            leaf = flat.detach().requires_grad_(True)
            losses = losses_of(leaf, xb, yb)
            (grad,) = torch.autograd.grad(losses.sum(), leaf, allow_unused=True)
        return (torch.zeros_like(flat) if grad is None else grad), losses.detach()

    return _in_groups(one_pass, per_pass, full_batch)


def _in_groups(one_pass: GradFn, per_pass: int | None, full_batch: bool) -> GradFn:
    """``one_pass`` over the chains in groups of ``per_pass`` (None: all in one pass)."""

    def grouped(flat: Tensor, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        chains = flat.shape[0]
        if per_pass is None or per_pass >= chains:
            return one_pass(flat, xb, yb)
        grad, losses = torch.empty_like(flat), torch.empty(chains, dtype=flat.dtype, device=flat.device)
        for s in range(0, chains, per_pass):
            part = slice(s, s + per_pass)
            grad[part], losses[part] = one_pass(flat[part], xb if full_batch else xb[part],
                                                yb if full_batch else yb[part])
        return grad, losses

    return grouped


def _sampled_layout(model: torch.nn.Module, params: Sequence[str] | None) -> tuple[_Layout, State, Tensor]:
    """(layout of the sampled parameters, the fixed tensors (other parameters and copied buffers),
    w* flattened in the layout's order)."""
    named = dict(model.named_parameters())
    names = [k for k, p in named.items() if p.requires_grad] if params is None else list(params)
    if not names:
        raise ValueError("the model has no trainable parameters to sample")
    missing = [k for k in names if k not in named]
    if missing:
        raise ValueError(f"no parameter named {', '.join(missing)}")
    chosen = set(names)
    fixed = {k: p.detach() for k, p in named.items() if k not in chosen}
    fixed.update({k: b.detach().clone() for k, b in model.named_buffers()})
    tensors = [named[k].detach() for k in names]
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    sizes = [t.numel() for t in tensors]
    layout = _Layout(names, [t.shape for t in tensors], [t.dtype for t in tensors],
                     [int(o) for o in np.cumsum([0, *sizes[:-1]])], sizes)
    return layout, fixed, torch.cat([t.reshape(-1).to(dtype) for t in tensors])


def activation_bytes(model: torch.nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn,
                     params: Sequence[str] | None, batch_size: int) -> int:
    """Bytes autograd saves for ONE chain's step on a minibatch of ``batch_size`` (measured on the
    first examples): what each chain adds to a pass (see :mod:`lambdascope.llc.chain_groups`)."""
    layout, fixed, center = _sampled_layout(model, params)
    forward = make_forward(model, vectorized=False)
    xb, yb = x[:batch_size].clone(), y[:batch_size].clone()  # a step's minibatch is its own copy too
    return saved_bytes_per_chain(lambda flat: loss_fn(forward({**layout.unflatten(flat), **fixed}, xb), yb),
                                 center)


def pass_seconds(model: torch.nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, params: Sequence[str] | None,
                 batch_size: int, chains: int, per_pass: int, repeats: int = 2) -> float:
    """Seconds of one step's gradients for ``chains`` chains at w*, ``per_pass`` chains per pass:
    the best of ``repeats`` timed steps after an untimed one (vmapped, as the sampler runs them)."""
    layout, fixed, center = _sampled_layout(model, params)
    n = x.shape[0]
    full_batch = batch_size >= n
    grad_fn = _grad_fn(model, layout, fixed, loss_fn, True, full_batch, per_pass)
    w = center.unsqueeze(0).repeat(chains, 1)
    xb, yb = x, y
    if not full_batch:
        idx = torch.arange(chains * batch_size, device=x.device) % n
        xb = x.index_select(0, idx).view(chains, batch_size, *x.shape[1:])
        yb = y.index_select(0, idx).view(chains, batch_size, *y.shape[1:])
    grad_fn(w, xb, yb)
    best = math.inf
    for _ in range(repeats):
        began = time.perf_counter()
        grad_fn(w, xb, yb)
        best = min(best, time.perf_counter() - began)
    return best


def _raise_if_diverged(
    losses: Tensor, start: int, stop: int, explode_at: float | None, step_size: float, localization: float
) -> None:
    """Raise on the first non-finite (or above ``explode_at``) loss among steps [start, stop)."""
    window = losses[:, start:stop]
    bad = ~torch.isfinite(window)
    if explode_at is not None:
        bad |= window > explode_at
    if not bad.any():
        return
    step = int(bad.any(dim=0).nonzero()[0, 0])
    chain = int(bad[:, step].nonzero()[0, 0])
    value = losses[chain, start + step].item()
    why = "is not finite" if not math.isfinite(value) else f"exploded past {explode_at:.6g}"
    raise SamplerDivergedError(
        f"SGLD chain {chain} diverged at step {start + step} of {losses.shape[1]}: minibatch loss "
        f"{value:.6g} {why}. Lower the step size (now {step_size:g}) or raise localization "
        f"(now {localization:g}); leaving the step size unset lets calibration choose it.",
        chain=chain,
        step=start + step,
        loss=value,
    )


def run_sgld(
    model: torch.nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    *,
    chains: int,
    steps: int,
    step_size: float,
    localization: float,
    nbeta: float,
    batch_size: int,
    seed: int,
    weight_decay: float = 0.0,
    params: Sequence[str] | None = None,
    accept_every: int = 10,
    explode_at: float | None = None,
    init: Tensor | None = None,
    warmup: tuple[int, float] | None = None,
    vectorize: bool = True,
    on_check: Callable[[int, Tensor], None] | None = None,
    deadline: float | None = None,
    chains_per_pass: int | None = None,
    compiler: GradientCompiler | None = None,
    precondition: Preconditioner | None = None,
    moments: str = "diagonal",
    baseline: Tensor | None = None,
    counter_noise: bool | None = None,
    slope: Tensor | None = None,
    tilt: bool = False,
) -> SGLDTrace:
    """Run ``chains`` SGLD chains for ``steps`` steps from the model's parameters w*.

    ``model``, ``x`` and ``y`` must already sit on one device. ``params`` names the parameters to
    sample (default: those with ``requires_grad``); the others and the buffers stay fixed at
    their values (buffers are copied, never written back). ``accept_every`` = k scores every k-th
    step's move with the MALA acceptance probability (0 turns it off; each scored step costs one
    extra forward+backward). Every ~1% of steps (at most 50 steps apart) the losses are checked:
    a non-finite loss, or one above ``explode_at``, raises :class:`SamplerDivergedError`; then
    ``on_check(steps_done, losses)`` is called. ``init`` (chains, D) starts the chains elsewhere
    than w* (e.g. where calibration left them; the parameters flattened in ``params`` order, as in
    :attr:`SGLDTrace.final`); the localization stays centred at w*. ``warmup = (k, eps_w)`` runs
    the first k steps with step size eps_w instead (a faster burn-in; those steps must be
    discarded by the caller). ``deadline`` (a ``time.perf_counter()`` value): stop after the
    first step that ends past it (the losses are checked there too); the trace then holds only
    the steps run. ``chains_per_pass``: step the chains in groups of this many per
    forward+backward pass (None: all in one), to bound memory.
    ``compiler``: the estimate's :class:`~lambdascope.llc.compiled.GradientCompiler`; the
    gradient (each group's pass, when the chains go in groups) is compiled once the estimate's
    eager sampling time makes it worth it (the numbers are the same up to float rounding).
    ``precondition``: a fixed M for every chain (:mod:`lambdascope.llc.preconditioner`): each
    step is then ``w ← w − (ε/2)·M∇U + √ε·M^½ξ``, which samples the same posterior, and the
    scoring, the curvature probe and the gradient noise measure that move (the noise weighted by
    M). ``moments``: which second moments of ∇U the scored steps gather (:attr:`SGLDTrace.moments`),
    "diagonal" (per coordinate) or "kronecker" (and each weight matrix's rows' and columns').
    ``baseline`` (n,): each example's loss at w* less L_n(w*) (``llc.batch_losses``), for a loss
    that is a mean over examples. Each recorded loss is then the minibatch's loss less the
    minibatch's mean of it, ``L_B(w) − L_B(w*) + L_n(w*)``: the same expectation (every example
    is drawn equally often), without the spread of L_B(w*) itself, which on noisy data sets
    swamps λ̂: a regression with label noise of sd 0.5, n = 10,000 and a batch of 256 reads
    nβ·L_B(w*) with an sd of ~24 against λ = 2.5 (docs/benchmarks.md §4zg). The chains move
    exactly as without it; only the readout changes.
    ``counter_noise``: where the chains' noise comes from. None (the default): each chain's Mersenne
    Twister generator while the move runs eagerly, and on the CPU, once the run compiles, Philox
    (:mod:`lambdascope.llc.noise`) inside the compiled move (the same law, a different stream from
    that step on; on a GPU torch's own generator is already a counter-based one). True: Philox
    from the first step, eagerly until compiled (slow eagerly; for comparing eager and compiled
    chains). False: the Mersenne Twister throughout.
    ``slope`` (D,): ∇L_n(w*) over the sampled parameters in their order
    (:func:`lambdascope.llc.stationarity.loss_gradient`); each scored step then records
    nβ·∇L_n(w*)·(w − w*) per chain (:attr:`SGLDTrace.slope`). ``tilt`` (with a nonzero ``slope``):
    sample the loss less its tangent plane at w*, L(w) − ∇L_n(w*)·(w − w*): the pull points at
    w* + (nβ/γ)·∇L_n(w*) instead of w* (the same drift, no extra work), each recorded loss has
    ∇L_n(w*)·(w − w*) taken off, and the MALA score is that of the tilted potential.
    """
    device = x.device
    layout, fixed, center = _sampled_layout(model, params)
    dtype, dim = center.dtype, layout.total
    if init is None:
        w = center.unsqueeze(0).repeat(chains, 1)
    else:
        if tuple(init.shape) != (chains, dim):
            raise ValueError(f"init must have shape ({chains}, {dim}) (got {tuple(init.shape)})")
        w = init.to(device=device, dtype=dtype).clone()

    batch_gens, noise_gens, keys = _chain_generators(seed, chains, device)
    n = x.shape[0]
    full_batch = batch_size >= n
    batches = None if full_batch else _Minibatches(n, batch_size, batch_gens, device)
    noise_block = max(1, min(_MAX_BLOCK_STEPS, _BLOCK_VALUES // dim))
    index_block = max(1, min(_MAX_BLOCK_STEPS, _BLOCK_VALUES // batch_size))

    vectorized = vectorize
    grad_fn = _grad_fn(model, layout, fixed, loss_fn, vectorized, full_batch, chains_per_pass)
    compiled = False
    # counter: Philox noise drawn inside the move function (noise_lib.with_noise), else a block
    # of each chain's Mersenne Twister numbers handed to it; plain moves run as in-place ops then
    counter_when_compiled = device.type == "cpu" if counter_noise is None else counter_noise
    counter = bool(counter_noise)

    def compile_now() -> None:  # the same passes, each through the compiled gradient (and move)
        nonlocal grad_fn, compiled, move, counter
        eager_pass = _grad_fn(model, layout, fixed, loss_fn, True, full_batch)
        one_pass = compiler.gradient(_chain_loss(model, layout, loss_fn, True), fixed, full_batch, eager_pass)
        grad_fn = _in_groups(one_pass, chains_per_pass, full_batch)
        what = "move" if pre is None else "preconditioned move"
        if counter_when_compiled:
            noisy = compiler.move(layout_key, noise_lib.with_noise(eager_move, dim), f"{what} with Philox noise")
            # compiles it (each input its own tensor: the tracer would take one tensor given twice for one input)
            noisy(torch.zeros_like(w), w, center, keys, torch.zeros((), dtype=torch.int64, device=device), coef, *held)
            if not compiler.move_failure:  # else the Mersenne Twister's block goes on where it was
                counter, move = True, noisy
        if not counter and pre is not None:
            move = compiler.move(layout_key, eager_move, what)
        compiled = True

    pre = None
    eager_move = plain_move
    if precondition is not None:
        if tuple(precondition.m.shape) != (dim,):
            raise ValueError(f"precondition must hold {dim} positive numbers")
        pre = precondition.to(device, dtype)
        eager_move = preconditioner_lib.step_function(pre.blocks)
    layout_key = ("plain",) if pre is None else pre.blocks
    move = noise_lib.with_noise(eager_move, dim) if counter else eager_move
    held = pre.tensors() if pre is not None else ()
    losses = torch.empty(chains, steps, dtype=dtype, device=device)
    every, checked = max(1, min(50, steps // 100)), 0
    warm_steps, warm_size = warmup if warmup is not None else (0, step_size)
    current = warm_size if warm_steps > 0 else step_size
    half, scale = current / 2, math.sqrt(current)
    accept_every = max(0, int(accept_every))
    scored = list(range(accept_every - 1, steps, accept_every)) if accept_every else []
    m = len(scored)
    f64 = torch.float64
    acc = torch.full((chains, m), math.nan, dtype=f64, device=device)
    curv = torch.full((chains, m), math.nan, dtype=f64, device=device)
    noise_stat = torch.full((chains, m), math.nan, dtype=f64, device=device)
    loc_energy = torch.full((chains, m), math.nan, dtype=f64, device=device)
    slope_trace = None
    anchor = center  # where the move's pull points: w*, or for the tilted loss w* + (nβ/γ)·∇L_n(w*)
    if slope is not None:
        if tuple(slope.shape) != (dim,):
            raise ValueError(f"slope must hold one number per sampled parameter ({dim}), not {tuple(slope.shape)}")
        slope = slope.to(device=device, dtype=dtype)
        slope_trace = torch.full((chains, m), math.nan, dtype=f64, device=device)
    tilt = tilt and slope is not None and bool(slope.any())  # a zero slope leaves nothing to take off
    if tilt:
        if not localization:
            raise ValueError("sampling the tilted loss needs a localization γ > 0")
        anchor = center + (nbeta / localization) * slope
        slope_at_center = float(_dot(center[None], slope))
    slot, pending_grad = 0, None  # pending_grad: loss gradient at w' on the scored step's batch
    xb, yb = x, y
    if baseline is not None and tuple(baseline.shape) != (n,):
        raise ValueError(f"baseline must hold one loss per example ({n}), not {tuple(baseline.shape)}")
    # per-example baseline, read per step by the minibatch's indices (nothing to take off a full batch)
    base = None if baseline is None or full_batch else baseline.to(device=device, dtype=dtype)
    noise = torch.empty(chains, noise_block, dim, dtype=dtype, device=device)
    kn = noise_block  # how many of the block's steps are used: none drawn yet

    def drawn() -> Tensor:
        """The next step's Mersenne Twister numbers (chains, D), drawn a block of steps at a time."""
        nonlocal kn
        if kn == noise_block:
            for c, g in enumerate(noise_gens):
                torch.randn(noise_block, dim, generator=g, out=noise[c])
            kn = 0
        kn += 1
        return noise[:, kn - 1]

    def coefficients() -> Tensor:
        """The move's constants at the current step size (plain_move, preconditioner.step_function)."""
        return torch.tensor(
            [-half * nbeta, -half * (localization + weight_decay), half * localization, scale], dtype=dtype,
            device=device)
    coef = coefficients()
    gathered = None
    if m:
        matrices = preconditioner_lib.blocks(layout.shapes, layout.offsets) if moments == "kronecker" else []
        gathered = preconditioner_lib.Moments(dim, matrices, device, dtype)
    if compiler is not None and vectorized and compiler.state == "compiled":  # an earlier run of the estimate compiled
        compile_now()
    began = time.perf_counter()
    for t in range(steps):
        if t == warm_steps and current != step_size:
            current = step_size
            half, scale = current / 2, math.sqrt(current)
            coef = coefficients()
        ki = t % index_block
        if not full_batch:
            if ki == 0:
                indices = batches.block(index_block)
            idx = indices[:, ki].reshape(-1)  # index_select: far faster than x[idx] on CPU
            xb = x.index_select(0, idx).view(chains, batch_size, *x.shape[1:])
            yb = y.index_select(0, idx).view(chains, batch_size, *y.shape[1:])
        try:
            grad, loss = grad_fn(w, xb, yb)
        except Exception as err:  # vmap cannot batch every model; the loop can run any of them
            if not vectorized or t > 0:
                raise
            log.warning("vmap failed for this model (%s: %s); running the %d chains one by one",
                        type(err).__name__, err, chains)
            vectorized = False
            grad_fn = _grad_fn(model, layout, fixed, loss_fn, vectorized, full_batch, chains_per_pass)
            grad, loss = grad_fn(w, xb, yb)
        losses[:, t] = loss if base is None else loss - base.index_select(0, idx).view(chains, batch_size).mean(1)
        if tilt:  # the tilted loss L − ∇L_n(w*)·(w − w*)
            losses[:, t] -= torch.mv(w, slope).double() - slope_at_center
        if pending_grad is not None:
            noise_stat[:, slot - 1] = _norm_sq(grad - pending_grad, pre) * nbeta**2
            pending_grad = None
        # w' = (1 − (ε/2)(γ + wd))·w + (ε/2)γ·w* − (ε/2)nβ·g + √ε·ξ, in four passes over the
        # gradient's own buffer (nothing allocated), or over a copy when the move is scored and
        # its parts are needed; both give the same numbers, so scoring never changes a chain.
        # Preconditioned: w' = w + M·(−(ε/2)(nβ·g + (γ + wd)·w − γ·w*)) + √ε·M^½ξ, one function
        # (preconditioner.step_function) that leaves g as it is, compiled with the gradient.
        # With counter noise either move is one function (plain_move or step_function) drawing
        # its own ξ (noise_lib.with_noise), compiled into one loop on the CPU.
        is_scored = slot < m and scored[slot] == t
        if counter and compiled and counter_noise is None and (compiler.state == "failed" or compiler.move_failure):
            counter, move = False, eager_move  # Philox is slow eagerly: the Mersenne Twister's block goes on
        if counter:
            w_next = move(grad, w, anchor, keys, torch.tensor(t, dtype=torch.int64, device=device), coef, *held)
        elif pre is None:
            w_next = grad.mul(-half * nbeta) if is_scored else grad.mul_(-half * nbeta)
            w_next.add_(w, alpha=1.0 - half * (localization + weight_decay))
            if localization:
                w_next.add_(anchor, alpha=half * localization)
            w_next.add_(drawn(), alpha=scale)
        else:
            w_next = move(grad, w, anchor, drawn(), coef, *held)
        if is_scored:
            grad2, loss2 = grad_fn(w_next, xb, yb)
            diff = w - center
            if tilt:  # score the move on the potential it samples
                g, l, g2, l2 = (grad - slope, loss - _dot(diff, slope), grad2 - slope,
                                loss2 - _dot(w_next - center, slope))
            else:
                g, l, g2, l2 = grad, loss, grad2, loss2
            _score_move(w, w_next, diff, g, l, g2, l2, nbeta, localization, weight_decay,
                        current, out=(acc, curv, loc_energy), slot=slot, precondition=pre, moments=gathered)
            if slope_trace is not None:
                slope_trace[:, slot] = nbeta * _dot(diff, slope)
            pending_grad = grad2 if t + 1 < steps else None
            slot += 1
        w = w_next
        done = t + 1
        late = deadline is not None and time.perf_counter() > deadline  # checked every step: a step can be long
        if done % every == 0 or done == steps or late:
            _raise_if_diverged(losses, checked, done, explode_at, current, localization)
            checked = done
            if compiler is not None and vectorized and not compiled and compiler.due(time.perf_counter() - began):
                compiler.eager_seconds += time.perf_counter() - began
                compile_now()
            if on_check is not None:
                on_check(done, losses[:, :done])
            if late and done < steps:
                steps, losses = done, losses[:, :done]
                m = sum(t < done for t in scored)
                scored, acc, curv = scored[:m], acc[:, :m], curv[:, :m]
                noise_stat, loc_energy = noise_stat[:, :m], loc_energy[:, :m]
                slope_trace = None if slope_trace is None else slope_trace[:, :m]
                break
    seconds = time.perf_counter() - began
    if compiler is not None and not compiled:
        compiler.eager_seconds += seconds
    return SGLDTrace(
        losses=losses.cpu(),
        vectorized=vectorized,
        seconds=seconds,
        accept_steps=torch.tensor(scored, dtype=torch.long),
        acceptance=acc.cpu(),
        curvature=curv.cpu(),
        grad_noise=noise_stat.cpu(),
        localization_energy=loc_energy.cpu(),
        final=w,
        moments=None if gathered is None else gathered.state(),
        slope=None if slope_trace is None else slope_trace.cpu(),
    )


def plain_move(grad: Tensor, w: Tensor, center: Tensor, noise: Tensor, coef: Tensor) -> Tensor:
    """The unpreconditioned move as a function of tensors, for the compiled move with Philox noise:
    ``w + c₀·g + c₁·w + c₂·w* + c₃·ξ``, ``coef`` as in preconditioner.step_function. (Eagerly the
    loop runs the same move as in-place operations on the gradient's buffer.)"""
    return w + grad * coef[0] + w * coef[1] + center * coef[2] + noise * coef[3]


def _score_move(
    w: Tensor, w_next: Tensor, diff: Tensor, grad: Tensor, loss: Tensor, grad2: Tensor, loss2: Tensor,
    nbeta: float, localization: float, weight_decay: float, step_size: float,
    *, out: tuple[Tensor, Tensor, Tensor], slot: int, precondition: Preconditioner | None = None,
    moments: preconditioner_lib.Moments | None = None,
) -> None:
    """MALA log-acceptance of the move w → w_next on one minibatch, per chain.

    With δ = w' − w (the move actually made) and G, G' = ∇U at w, w'::

        log α = −(U(w') − U(w)) + δ·(G + G')/2 + (ε/8)·(‖G‖²_M − ‖G'‖²_M)

    which is ``−ΔU + log q(w|w') − log q(w'|w)`` for the proposal N(w − (ε/2)M·G, ε·M) (M = I
    without a preconditioner; ‖G‖²_M = G·M·G) with the Gaussian normalizers cancelled and the
    terms regrouped so that no two large numbers are subtracted (for a quadratic U the first two
    terms cancel exactly). ``moments`` gathers G's second moments.

    Precision: each coordinate's arithmetic runs in the model's dtype, every sum over coordinates
    in float64 (:func:`_dot`). δ, and G' − G for the curvature probe, are differences of close
    numbers, exact where the two are within a factor 2 of each other (Sterbenz); the rest rounds
    each coordinate's term by ~1e-7 of itself, which the float64 sums keep from accumulating.
    A float32 model's own losses already limit ΔU to ~nβ·|L|·1e-7. (All in float64, a deep
    network's scored step cost twice as much: docs/benchmarks.md §2i.)
    """
    acc, curv, loc_energy = out
    d = w_next - w
    gu = grad * nbeta + diff * localization
    gu2 = grad2 * nbeta + (diff + d) * localization
    du = nbeta * (loss2.double() - loss.double()) + (localization / 2) * (2 * _dot(d, diff) + _dot(d, d))
    if weight_decay:
        gu.add_(w, alpha=weight_decay)
        gu2.add_(w_next, alpha=weight_decay)
        du = du + (weight_decay / 2) * (2 * _dot(d, w) + _dot(d, d))
    if moments is not None:
        moments.observe(gu)
    log_alpha = -du + _dot(d, gu + gu2) / 2 + (step_size / 8) * (_norm_sq(gu, precondition)
                                                                 - _norm_sq(gu2, precondition))
    a = torch.exp(log_alpha.clamp(max=0.0))
    acc[:, slot] = torch.where(torch.isnan(a), torch.zeros_like(a), a)
    curv[:, slot] = nbeta * _dot(grad2 - grad, d)
    loc_energy[:, slot] = (localization / 2) * _dot(diff, diff)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Σ a·b per chain, (chains,) float64, for ``a``, ``b`` (chains, D) in any float dtype."""
    return (a * b).sum(dim=1, dtype=torch.float64)


def _norm_sq(v: Tensor, precondition: Preconditioner | None) -> Tensor:
    """vᵀ·M·v per chain (M = I without a preconditioner), (chains,) float64, for ``v`` (chains, D)."""
    return _dot(v, v) if precondition is None else precondition.norm_sq(v)
