"""The chains' gradient compiled by torch's inductor, once a run is long enough to repay it.

Why: on models of a few thousand to some tens of thousands of parameters a step's time is mostly
the framework's per-operation overhead (vmap, autograd, dispatch), not arithmetic. Compiled,
the same gradients cost far less: side by side in one process (bench/compile_gain.py,
docs/benchmarks.md §2e-2f) the whole step ran 1.7-4.2× faster on deep linear networks of
400-15,200 parameters and 1.4× on a 1M-parameter transformer, the chains' losses equal to float
rounding. Compiling costs seconds: 10-38 s for the first model a process compiles with torch's
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

A preconditioned run's move (:func:`lambdascope.llc.preconditioner.step_function`: the rotations
into M's eigenbasis and back, ~40 small operations) is compiled at the same moment, to its own
graph (:meth:`GradientCompiler.move`): about 8% off a default audit's step (docs/benchmarks.md §2j).
On the CPU the compiled move, preconditioned or not, also draws the chains' noise (Philox,
:mod:`lambdascope.llc.noise`) in its own loop instead of reading the Mersenne Twister's serial
draws (docs/benchmarks.md §2k).

Every graph goes through inductor's on-disk cache: a model of shapes compiled before (another
checkpoint, a rerun) loads its code in a few seconds instead of generating it again.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch
from torch.fx.experimental.proxy_tensor import make_fx
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
        self.compile_seconds = 0.0  # tracing and code generation, every graph's
        self.graphs_compiled = 0  # graphs compiled (gradient and move, every layout)
        self.graphs_cached = 0  # of those, the ones inductor loaded from its on-disk cache
        self.state = "eager"  # "eager" (not compiled yet), "compiled", "failed"
        self.failure = ""
        self.compiled_before = False  # whether a graph ran before compiling failed
        self._trace: Callable | None = None  # the chains' gradient as a function of tensors only
        self._names: list[str] = []  # the fixed tensors' names, in the order the graphs take them
        self._graphs: dict[tuple, Callable] = {}  # compiled graphs by the shapes they were built for
        self._moves: dict[tuple, Callable] = {}  # compiled moves, by blocks, function and layout
        self.move_failure = ""  # why compiling the move failed ("" if it did not)
        self.move_what = "preconditioned move"  # the compiled move, as the summary names it

    def due(self, eager_seconds_now: float) -> bool:
        """Whether to compile, with ``eager_seconds_now`` spent eagerly by the run in progress."""
        return self.state == "eager" and self.eager_seconds + eager_seconds_now >= self.after_seconds

    def gradient(self, loss_at: Callable, fixed: dict[str, torch.Tensor], full_batch: bool,
                 eager: GradFn) -> GradFn:
        """The compiled counterpart of ``eager``: ``loss_at(flat, fixed, xb, yb)`` is one chain's
        loss. Falls back to ``eager`` (for good) on the first failure. The first call's
        ``loss_at``, ``full_batch`` and the names in ``fixed`` are kept: every run of one estimate
        samples the same model, parameters and batch layout (``fixed``'s tensors are inputs, given
        at each call)."""
        if self._trace is None:
            data = None if full_batch else 0
            batched = vmap(grad_and_value(loss_at), in_dims=(0, None, data, data))
            names = list(fixed)

            def chains_gradient(flat, xb, yb, *fixed_values):
                return batched(flat, dict(zip(names, fixed_values)), xb, yb)

            self._trace, self._names = chains_gradient, names

        def step(flat: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if self.state == "failed":
                return eager(flat, xb, yb)
            try:
                inputs = (flat, xb, yb, *(fixed[k] for k in self._names))
                key = (flat.shape, xb.shape, yb.shape)  # a smaller last group of chains: a graph of its own
                graph = self._graphs.get(key)
                if graph is None:
                    began = time.perf_counter()
                    graph = self._graphs[key] = self._build(self._trace, inputs)
                    self.compile_seconds += time.perf_counter() - began
                grad, loss = graph(*inputs)
            except Exception as err:  # noqa: BLE001 - any failure to compile leaves eager, which works
                self.compiled_before = self.state == "compiled"  # a later group size's graph failed
                self.state, self._trace, self._graphs = "failed", None, {}
                self.failure = _first_line(err)
                log.warning("compiling the gradient failed (%s); sampling goes on with the eager gradient", self.failure)
                return eager(flat, xb, yb)
            self.state = "compiled"
            return grad, loss

        return step

    def move(self, blocks: tuple, eager: Callable[..., torch.Tensor], what: str = "preconditioned move"
             ) -> Callable[..., torch.Tensor]:
        """The compiled counterpart of a move, ``eager`` = a function of tensors for the layout
        ``blocks`` (:func:`~lambdascope.llc.preconditioner.step_function` of M's blocks, or the
        plain move; either may draw its own noise, :func:`lambdascope.llc.noise.with_noise`): one
        graph per layout of its inputs (M's tensors are inputs, so a re-estimated M of the same
        blocks reuses it). Eager for the rest of the estimate if compiling or running it fails;
        its inputs are never modified, so the eager move can redo a failed one. ``what`` names it
        in the summary."""
        if not self.move_failure:  # a failure keeps the name of what failed
            self.move_what = what

        def step(*inputs: torch.Tensor) -> torch.Tensor:
            if self.move_failure:
                return eager(*inputs)
            key = (blocks, eager.__name__, *((t.shape, t.stride(), t.dtype) for t in inputs))
            try:
                graph = self._moves.get(key)
                if graph is None:
                    began = time.perf_counter()
                    graph = self._moves[key] = self._build(eager, inputs)
                    self.compile_seconds += time.perf_counter() - began
                out = graph(*inputs)
            except Exception as err:  # noqa: BLE001 - the eager move does the same
                self._moves = {}
                self.move_failure = _first_line(err)
                log.warning("compiling the %s failed (%s); it goes on eagerly", self.move_what, self.move_failure)
                return eager(*inputs)
            return out[0] if isinstance(out, (tuple, list)) else out
        return step

    def _build(self, fn: Callable, inputs: tuple[torch.Tensor, ...]) -> Callable:
        """:func:`_compile`, counting the graphs whose code came from inductor's cache."""
        from torch._dynamo.utils import counters  # 1 s to import: only when compiling

        hits = counters["inductor"]["fxgraph_cache_hit"]
        graph = _compile(fn, inputs)
        self.graphs_compiled += 1
        self.graphs_cached += counters["inductor"]["fxgraph_cache_hit"] > hits
        return graph

    def summary(self) -> str:
        """What happened, for the estimate's report."""
        if self.move_failure:
            return f"{self._gradient_summary()}; compiling the {self.move_what} failed ({self.move_failure}), it ran eagerly"
        return self._gradient_summary()

    def _gradient_summary(self) -> str:
        if self.state == "compiled":
            what = f"gradient and {self.move_what}" if self._moves else "gradient"
            return (f"{what} compiled with torch's inductor after {self.eager_seconds:.1f} s of eager sampling "
                    f"(compiling took {self.compile_seconds:.1f} s{self._cached()})")
        if self.state == "failed" and self.compiled_before:
            return (f"gradient compiled with torch's inductor after {self.eager_seconds:.1f} s of eager sampling, "
                    f"then compiling a graph for another group of chains failed ({self.failure}); sampled "
                    "with the eager gradient from there on")
        if self.state == "failed":
            return f"compiling the gradient failed ({self.failure}); sampled with the eager gradient throughout"
        if self.eager_seconds < self.after_seconds:
            return (f"not compiled: the run sampled {self.eager_seconds:.1f} s, under the "
                    f"{self.after_seconds:g} s after which compiling pays")
        return (f"not compiled: the run passed the {self.after_seconds:g} s after which compiling pays "
                f"only in its last stretch (sampled {self.eager_seconds:.1f} s eagerly)")

    def _cached(self) -> str:
        if not self.graphs_cached:
            return ""
        if self.graphs_cached == self.graphs_compiled:
            return ", its code from torch's on-disk kernel cache"
        return f", {self.graphs_cached} of its {self.graphs_compiled} graphs' code from torch's on-disk kernel cache"


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def _compile(fn: Callable, inputs: tuple[torch.Tensor, ...]) -> Callable:
    """``fn`` traced to one graph of aten operations on ``inputs``' shapes and compiled by inductor.

    Why not ``torch.compile``: its every call first checks the guards dynamo wrote while tracing
    (a few hundred: the model's modules and attributes, functorch's state, each input), which cost
    60-160 µs per step on the suite's DLNs (docs/benchmarks.md §2f), as much as a small model's
    whole compiled step. The graph here has no guards: the sampler calls it only with tensors of
    the shapes it was traced for (inductor's generated code asserts sizes and strides), and the
    models it samples are exported programs or built-in architectures, whose code has no Python
    branches on tensor values to specialize on (tracing with fake tensors raises on any such
    branch instead of baking one side in).

    The graph is traced on fake copies of ``inputs`` made by a fake-tensor mode with a shape
    environment and static shapes, and compiled inside a tracing context of that mode: inductor's
    on-disk graph cache needs the shape environment (without it every compile bypasses the cache
    and generates the same code again, 10-40 s), and static shapes keep the kernels specialized to
    the sizes, as they were. So a second audit of a model of the same shapes (another checkpoint,
    a rerun, another parameter group of one shape) loads its kernels from the cache
    (docs/benchmarks.md §2l).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    mode = FakeTensorMode(shape_env=ShapeEnv(), static_shapes=True, allow_non_fake_inputs=True)
    fakes = [mode.from_tensor(t, static_shapes=True) for t in inputs]
    graph = make_fx(fn, tracing_mode="fake", _allow_non_fake_inputs=True)(*fakes)
    with torch._guards.tracing(torch._guards.TracingContext(mode)):
        return torch._inductor.compile(graph, fakes)
