"""The chains' gradient compiled with ``torch.compile``, once a run is long enough to repay it.

Why: on models of a few thousand to some tens of thousands of parameters a step's time is mostly
the framework's per-operation overhead (vmap, autograd, dispatch), not arithmetic. Compiled,
the same gradients cost far less: side by side in one process (bench/compile_gain.py,
docs/benchmarks.md §2e) the whole step ran 1.4-2.6× faster on deep linear networks of
400-15,200 parameters and 1.4× on a 1M-parameter transformer, the chains' losses equal to float
rounding. Compiling costs seconds: 10-35 s for the first model a process compiles with torch's
on-disk kernel cache empty, 1-4 s with it warm. A short audit would never earn that back.

So each estimate rents before it buys: it samples eagerly until its eager sampling time passes
:data:`COMPILE_AFTER_SECONDS` (about what a first compile costs), then compiles once and keeps
the compiled gradient for the rest of the estimate (pilots, warm-up and every chunk of the main
run share it). A run that ends sooner never compiles; a longer one pays at most about twice
what eager sampling would have cost it up to that point. If compiling fails (no C++ compiler,
an operation torch cannot compile) the estimate goes on eagerly and says so.

Chains stepped in groups (models too large for all chains at once, or timed faster that way)
go through the same compiled gradient group by group (a smaller last group is a second graph).
The vmap-less fallback for models vmap cannot batch stays eager.
"""
from __future__ import annotations

import logging
import time
import types
from collections.abc import Callable

import torch
from torch.func import grad_and_value, vmap

log = logging.getLogger(__name__)

__all__ = ["COMPILE_AFTER_SECONDS", "GradFn", "GradientCompiler"]

COMPILE_AFTER_SECONDS = 10.0

GradFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class GradientCompiler:
    """One estimate's compiled gradient: built once its eager sampling passes ``after_seconds``,
    reused by every later sampling run of the estimate, abandoned for eager if it fails."""

    def __init__(self, after_seconds: float = COMPILE_AFTER_SECONDS):
        self.after_seconds = after_seconds
        self.eager_seconds = 0.0  # sampling time spent on the eager gradient so far
        self.compile_seconds = 0.0  # the first compiled call's time (tracing + code generation)
        self.state = "eager"  # "eager" (not compiled yet), "compiled", "failed"
        self.failure = ""
        self._fn: Callable | None = None

    def due(self, eager_seconds_now: float) -> bool:
        """Whether to compile, with ``eager_seconds_now`` spent eagerly by the run in progress."""
        return self.state == "eager" and self.eager_seconds + eager_seconds_now >= self.after_seconds

    def gradient(self, loss_at: Callable, fixed: dict[str, torch.Tensor], full_batch: bool,
                 eager: GradFn) -> GradFn:
        """The compiled counterpart of ``eager``: ``loss_at(flat, fixed, xb, yb)`` is one chain's
        loss. Falls back to ``eager`` (for good) on the first failure. The first call's
        ``loss_at`` and ``full_batch`` are kept: every run of one estimate samples the same model,
        parameters and batch layout (``fixed`` is an input, given at each call)."""
        if self._fn is None:
            data = None if full_batch else 0
            batched = vmap(grad_and_value(loss_at), in_dims=(0, None, data, data))

            def chains_gradient(flat, fixed, xb, yb):
                return batched(flat, fixed, xb, yb)

            self._fn = torch.compile(_own_code(chains_gradient), dynamic=False)

        def step(flat: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if self.state == "failed":
                return eager(flat, xb, yb)
            first = self.state == "eager"
            began = time.perf_counter()
            try:
                grad, loss = self._fn(flat, fixed, xb, yb)
            except Exception as err:  # noqa: BLE001 - any failure to compile leaves eager, which works
                self.state, self._fn = "failed", None
                self.failure = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
                log.warning("torch.compile failed (%s); sampling goes on with the eager gradient", self.failure)
                return eager(flat, xb, yb)
            if first:
                self.state, self.compile_seconds = "compiled", time.perf_counter() - began
            return grad.detach(), loss.detach()

        return step

    def summary(self) -> str:
        """What happened, for the estimate's report."""
        if self.state == "compiled":
            return (f"gradient compiled with torch.compile after {self.eager_seconds:.1f} s of eager sampling "
                    f"(compiling took {self.compile_seconds:.1f} s)")
        if self.state == "failed":
            return f"torch.compile failed ({self.failure}); sampled with the eager gradient throughout"
        if self.eager_seconds < self.after_seconds:
            return (f"not compiled: the run sampled {self.eager_seconds:.1f} s, under the "
                    f"{self.after_seconds:g} s after which compiling pays")
        return (f"not compiled: the run passed the {self.after_seconds:g} s after which compiling pays "
                f"only in its last stretch (sampled {self.eager_seconds:.1f} s eagerly)")


def _own_code(fn: Callable) -> Callable:
    """``fn`` with a code object of its own. Dynamo keeps compiled graphs per code object, and
    stops compiling one after a few graphs (its recompile limit), running it eagerly from then on
    without an error: every estimate of a process would share functorch's one wrapper and,
    from the ninth on, silently not be compiled. Its own code gives each estimate its own cache,
    freed with it."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
