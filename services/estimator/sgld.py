"""SGLD on the localized, tempered posterior, with all chains stepped together.

Each step, on a minibatch gradient g of the MEAN loss::

    w <- w - (eps/2) * (nbeta * g + gamma * (w - w*)) + sqrt(eps) * N(0, I)

Why this layout: small models spend most of a step in Python overhead, so the chains' parameters
are stacked along a leading chain dimension and one ``vmap(grad_and_value(...))`` call computes
every chain's loss and gradient. The model is only read through ``functional_call``, so it is
never mutated and exported programs (which have no ``.train()``) work too. If ``vmap`` cannot
handle a model, the same update runs with gradients taken chain by chain.

Randomness: chain c owns a generator seeded from ``SeedSequence(seed).spawn(chains)[c]``; it draws
that chain's minibatches (reshuffled epochs) and its noise. The vmapped and chain-by-chain paths
therefore consume identical random numbers and agree up to floating-point rounding, and a chain's
stream does not depend on how many chains run beside it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap

log = logging.getLogger(__name__)

Tensor = torch.Tensor
LossFn = Callable[[Tensor, Tensor], Tensor]
State = dict[str, Tensor]


class SamplerDivergedError(RuntimeError):
    """A chain produced a non-finite loss; the message names the chain, the step and the fix."""


@dataclass(frozen=True)
class SGLDTrace:
    losses: Tensor  # (chains, steps) minibatch loss at the weights each step started from, on CPU
    vectorized: bool  # whether the chains ran under vmap
    seconds: float


def chain_seeds(seed: int, chains: int) -> list[int]:
    """Independent per-chain seeds; chain c's seed does not depend on the number of chains."""
    return [int(s.generate_state(1, np.uint64)[0]) for s in np.random.SeedSequence(seed).spawn(chains)]


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
    """Per-chain index streams: each chain walks its own reshuffled epochs, batches span epochs."""

    def __init__(self, n: int, batch_size: int, generators: list[torch.Generator], device: torch.device):
        self.n, self.batch_size, self.generators, self.device = n, batch_size, generators, device
        self.pending = [torch.empty(0, dtype=torch.long, device=device) for _ in generators]

    def next(self) -> Tensor:
        rows = []
        for c, gen in enumerate(self.generators):
            while self.pending[c].numel() < self.batch_size:
                perm = torch.randperm(self.n, generator=gen, device=self.device)
                self.pending[c] = torch.cat([self.pending[c], perm])
            rows.append(self.pending[c][: self.batch_size])
            self.pending[c] = self.pending[c][self.batch_size :]
        return torch.stack(rows)


def _grad_fn(
    model: torch.nn.Module, fixed: State, loss_fn: LossFn, vectorized: bool, full_batch: bool
) -> Callable[[State, Tensor, Tensor], tuple[State, Tensor]]:
    """(stacked params, x, y) -> (stacked grads, per-chain losses); x, y per chain unless full batch."""
    forward = make_forward(model, vectorized)

    def loss_at(params: State, xb: Tensor, yb: Tensor) -> Tensor:
        return loss_fn(forward({**params, **fixed}, xb), yb)

    single = grad_and_value(loss_at)
    data_dim = None if full_batch else 0
    if vectorized:
        return vmap(single, in_dims=(0, data_dim, data_dim))

    def looped(params: State, xb: Tensor, yb: Tensor) -> tuple[State, Tensor]:
        chains = next(iter(params.values())).shape[0]
        outs = [
            single(
                {k: v[c] for k, v in params.items()},
                xb if full_batch else xb[c],
                yb if full_batch else yb[c],
            )
            for c in range(chains)
        ]
        grads = {k: torch.stack([g[k] for g, _ in outs]) for k in params}
        return grads, torch.stack([loss for _, loss in outs])

    return looped


def _raise_if_diverged(losses: Tensor, start: int, stop: int, step_size: float, localization: float) -> None:
    """Raise on the first non-finite loss among steps [start, stop)."""
    bad = ~torch.isfinite(losses[:, start:stop])
    if not bad.any():
        return
    step = int(bad.any(dim=0).nonzero()[0, 0])
    chain = int(bad[:, step].nonzero()[0, 0])
    raise SamplerDivergedError(
        f"SGLD chain {chain} diverged at step {start + step} of {losses.shape[1]}: minibatch loss "
        f"{losses[chain, start + step].item()}. Lower the step size (now {step_size:g}) or raise "
        f"localization (now {localization:g})."
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
    vectorize: bool = True,
    on_check: Callable[[int, Tensor], None] | None = None,
) -> SGLDTrace:
    """Run ``chains`` SGLD chains for ``steps`` steps from the model's parameters w*.

    ``model``, ``x`` and ``y`` must already sit on one device. Parameters with ``requires_grad``
    are sampled; frozen ones and buffers stay fixed (buffers are copied, never written back).
    Every ~1% of steps (at most 50 steps apart) the losses are checked for non-finite values,
    raising :class:`SamplerDivergedError`, and ``on_check(steps_done, losses)`` is called.
    """
    device = x.device
    center = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    if not center:
        raise ValueError("the model has no trainable parameters to sample")
    fixed = {k: p.detach() for k, p in model.named_parameters() if not p.requires_grad}
    fixed.update({k: b.detach().clone() for k, b in model.named_buffers()})
    params = {k: w.unsqueeze(0).repeat(chains, *([1] * w.dim())) for k, w in center.items()}
    sizes = [w.numel() for w in center.values()]
    total = sum(sizes)
    dtype = next(iter(center.values())).dtype

    generators = [torch.Generator(device=device).manual_seed(s) for s in chain_seeds(seed, chains)]
    n = x.shape[0]
    full_batch = batch_size >= n
    batches = None if full_batch else _Minibatches(n, batch_size, generators, device)

    vectorized = vectorize
    grad_fn = _grad_fn(model, fixed, loss_fn, vectorized, full_batch)
    losses = torch.empty(chains, steps, dtype=dtype, device=device)
    every, checked = max(1, min(50, steps // 100)), 0
    half, scale = step_size / 2, math.sqrt(step_size)
    began = time.perf_counter()
    for t in range(steps):
        if full_batch:
            xb, yb = x, y
        else:
            idx = batches.next()
            xb, yb = x[idx], y[idx]
        try:
            grads, loss = grad_fn(params, xb, yb)
        except Exception as err:  # vmap cannot batch every model; the loop can run any of them
            if not vectorized or t > 0:
                raise
            log.warning("vmap failed for this model (%s: %s); running the %d chains one by one",
                        type(err).__name__, err, chains)
            vectorized = False
            grad_fn = _grad_fn(model, fixed, loss_fn, vectorized, full_batch)
            grads, loss = grad_fn(params, xb, yb)
        losses[:, t] = loss.detach()
        noise = torch.stack([torch.randn(total, generator=g, device=device, dtype=dtype) for g in generators])
        with torch.no_grad():
            for (k, w), eta in zip(params.items(), noise.split(sizes, dim=1)):
                drift = grads[k].mul(nbeta).add_(w - center[k], alpha=localization)
                w.add_(drift, alpha=-half).add_(eta.reshape(w.shape), alpha=scale)
        done = t + 1
        if done % every == 0 or done == steps:
            _raise_if_diverged(losses, checked, done, step_size, localization)
            checked = done
            if on_check is not None:
                on_check(done, losses[:, :done])
    return SGLDTrace(losses=losses.cpu(), vectorized=vectorized, seconds=time.perf_counter() - began)
