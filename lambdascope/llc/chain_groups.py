"""How many chains one forward+backward pass carries, and how much memory an audit used.

Memory. A pass holds every chain's activations at once, so a large model (a transformer over
long sequences) with many chains may not fit. The activations one chain's pass saves for its
backward are measured once on a real minibatch (``saved_tensors_hooks`` see exactly what
autograd keeps), and the chains are split into groups that fit in half of the memory available
to this process (cgroup limit, else MemAvailable on CPU; free memory on CUDA).

Speed. One vmapped pass over all chains is the fastest on small models, where a step is mostly
Python and dispatch overhead; on large ones batching buys nothing and the batched kernels are
slower (a 1M-parameter transformer, 4 chains, 2 CPU threads: 595 ms per step together, 472 ms one
chain per pass; bench/transformer_audit.py). So when a step of all chains together takes long
enough to time reliably (:data:`TIMED_ABOVE`), steps are timed each way, alternately, and the
faster is kept, unless that timing (about :data:`TIMING_ROUNDS` passes each way, twice over)
would cost more than :data:`TIMING_SHARE` of the run it serves (:func:`worth_timing`): with a small
``max_seconds`` on a 1M-parameter transformer it took 10.5 s before sampling began.

The gradients are the same numbers whichever way the chains are grouped (up to floating-point
rounding).
"""

from __future__ import annotations

import math
import resource
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["ChainPlan", "available_bytes", "by_speed", "peak_bytes", "plan_chains", "reset_peak", "saved_bytes_per_chain",
           "worth_timing"]

TIMED_ABOVE = 0.02  # seconds per step of all chains together: below, overhead dominates, keep them together
FASTER_BY = 0.9  # one chain per pass must be at least 10% faster to be chosen
TIMING_ROUNDS = 3  # each way is timed this many times, alternately; the best of each counts
TIMING_SHARE = 0.02  # of the run's time (its time cap, or its steps at the measured speed) the timing may take
MEMORY_SHARE = 0.5  # of the available memory, for the passes' activations
# Autograd keeps the saved activations and, during backward, gradients of about the same size;
# the optimizer-free update adds a few (D,) vectors per chain.
ACTIVATION_FACTOR = 2.0
STATE_VECTORS = 6


@dataclass(frozen=True)
class ChainPlan:
    """How the chains are stepped: ``per_pass`` chains per forward+backward pass."""

    per_pass: int
    bytes_per_chain: int  # activations + gradients + state of one chain's step (estimated)
    budget_bytes: int  # memory the passes may use
    summary: str


def available_bytes(device: torch.device) -> int:
    """Memory this process can still allocate on ``device`` (bytes)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    limits = [_meminfo_available()]
    limit, used = _cgroup_value("memory.max"), _cgroup_value("memory.current")
    if limit is not None and used is not None:
        limits.append(max(0, limit - used))
    known = [v for v in limits if v is not None]
    return min(known) if known else 8 << 30


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_value(name: str) -> int | None:
    try:
        text = (Path("/sys/fs/cgroup") / name).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def saved_bytes_per_chain(loss_at: Callable[[torch.Tensor], torch.Tensor], flat: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves for one chain's backward through ``loss_at(flat)``.

    Each saved tensor is counted once; views of the parameter vector (the weights, which every
    pass shares) are not.
    """
    seen: set[tuple[int, int]] = set()
    total = 0
    leaf = flat.detach().clone().requires_grad_(True)
    skip = leaf.untyped_storage().data_ptr()

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        key = (t.data_ptr(), t.numel() * t.element_size())
        if t.untyped_storage().data_ptr() != skip and key not in seen:
            seen.add(key)
            total += key[1]
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_at(leaf)
    return total


def plan_chains(chains: int, dim: int, itemsize: int, saved_bytes: int, budget_bytes: int,
                requested: int | None = None) -> ChainPlan:
    """All chains in one pass if they fit in ``budget_bytes``, else the largest group that does
    (at least one chain per pass); ``requested`` overrides the choice."""
    per_chain = int(ACTIVATION_FACTOR * saved_bytes + STATE_VECTORS * dim * itemsize)
    if requested is not None:
        per_pass = min(requested, chains)
        why = f"{per_pass} chain(s) per pass, as requested"
    else:
        fits = budget_bytes // max(per_chain, 1)
        per_pass = int(max(1, min(chains, fits)))
        if per_pass == chains:
            why = f"all {chains} chains in one pass"
        else:
            why = (f"{per_pass} chain(s) per pass: {chains} together would need about "
                   f"{_mib(per_chain * chains)}, more than the {_mib(budget_bytes)} budget")
    groups = math.ceil(chains / per_pass)
    summary = (f"{why} ({groups} pass(es) per step; about {_mib(per_chain)} per chain, "
               f"budget {_mib(budget_bytes)})")
    return ChainPlan(per_pass, per_chain, budget_bytes, summary)


def worth_timing(together: float, run_seconds: float) -> bool:
    """Whether timing the two groupings pays: a step of all chains together (``together``
    seconds) is long enough to time, and the timing's 2·TIMING_ROUNDS timed and as many untimed
    passes each way fit in TIMING_SHARE of the run's ``run_seconds``."""
    return together >= TIMED_ABOVE and 4 * TIMING_ROUNDS * together <= TIMING_SHARE * run_seconds


def by_speed(plan: ChainPlan, chains: int, together: float, one_by_one: float) -> ChainPlan:
    """``plan``, or one chain per pass when that measured faster (seconds per step of all chains
    with ``plan.per_pass`` and with 1 chain per pass)."""
    if plan.per_pass == 1 or one_by_one >= FASTER_BY * together:
        return plan
    summary = (f"1 chain per pass: measured {1000 * one_by_one:.0f} ms per step, against "
               f"{1000 * together:.0f} ms with {plan.per_pass} per pass (about {_mib(plan.bytes_per_chain)} "
               f"per chain, budget {_mib(plan.budget_bytes)})")
    return ChainPlan(1, plan.bytes_per_chain, plan.budget_bytes, summary)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> tuple[int, str]:
    """(peak bytes, what was measured): CUDA memory allocated by torch since :func:`reset_peak`,
    or on CPU the peak resident memory of this process (its high-water mark since it started)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "peak CUDA memory allocated by the audit"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "peak resident memory of the process"


def _mib(n: float) -> str:
    return f"{n / (1 << 20):,.0f} MiB" if n >= 1 << 20 else f"{n / 1024:,.0f} KiB"
