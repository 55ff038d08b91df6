"""The compiled gradient (lambdascope.llc.compiled): same chains as eager, compiled only when the
estimate has sampled long enough, and eager again, said plainly, when compiling fails."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lambdascope.llc.compiled import GradientCompiler
from lambdascope.llc.llc import SGLDConfig, estimate_llc
from lambdascope.llc.sgld import run_sgld

ROOT = Path(__file__).resolve().parents[2]


def _dln(seed: int = 0, widths=(6, 9, 7, 5), n: int = 2000):
    gen = torch.Generator().manual_seed(seed)
    layers = [torch.nn.Linear(a, b, bias=False) for a, b in zip(widths, widths[1:])]
    model = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for layer in layers:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) / layer.weight.shape[1] ** 0.5)
    x = torch.randn(n, widths[0], generator=gen)
    with torch.no_grad():
        y = model(x)
    return model, x, y


def _mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (out - target).square().mean()


def test_compiled_chains_follow_the_eager_ones():
    model, x, y = _dln()
    run = dict(chains=3, steps=300, step_size=2e-5, localization=10.0, nbeta=300.0, batch_size=64, seed=4,
               accept_every=10, counter_noise=True)  # the compiled move's noise, drawn eagerly too
    eager = run_sgld(model, x, y, _mse, **run)
    compiler = GradientCompiler(after_seconds=0.0)  # compile at the first check
    compiled = run_sgld(model, x, y, _mse, compiler=compiler, **run)
    assert compiler.state == "compiled", compiler.summary()
    assert compiler.compile_seconds > 0
    # the same random streams and the same gradients up to float rounding: the same chains
    torch.testing.assert_close(compiled.losses, eager.losses, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(compiled.final, eager.final, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(compiled.acceptance, eager.acceptance, rtol=1e-3, atol=1e-4)
    # a later run of the same estimate starts compiled, without compiling again
    before = compiler.compile_seconds
    again = run_sgld(model, x, y, _mse, compiler=compiler, **run)
    assert compiler.compile_seconds == before
    torch.testing.assert_close(again.losses, eager.losses, rtol=1e-4, atol=1e-7)


def test_a_short_estimate_never_compiles_and_says_why():
    model, x, y = _dln(1)
    result = estimate_llc(model, x, y, _mse, SGLDConfig(chains=2, draws=50, burnin=50, step_size=1e-5))
    assert result.compile_summary.startswith("not compiled: the run sampled")
    assert result.compile_seconds == 0.0
    off = estimate_llc(model, x, y, _mse, SGLDConfig(chains=2, draws=50, burnin=50, step_size=1e-5,
                                                     compile_gradients=False))
    assert off.compile_summary == "not compiled (compile_gradients off)"
    assert off.mean == result.mean  # eager both times: bitwise the same estimate


def test_a_run_that_ends_past_the_threshold_but_before_its_next_check_says_so():
    compiler = GradientCompiler(after_seconds=10.0)
    compiler.eager_seconds = 14.1  # what a 1M-parameter transformer's capped estimate sampled
    assert compiler.summary() == ("not compiled: the run passed the 10 s after which compiling pays only in "
                                  "its last stretch (sampled 14.1 s eagerly)")


def test_the_compiler_is_due_by_eager_time_spent_across_runs():
    compiler = GradientCompiler(after_seconds=10.0)
    assert not compiler.due(9.0)
    compiler.eager_seconds = 6.0  # an earlier run of the estimate (a pilot) sampled 6 s
    assert compiler.due(4.0) and not compiler.due(3.9)
    compiler.state = "failed"
    assert not compiler.due(100.0)


def test_a_second_estimate_of_the_same_shapes_takes_its_code_from_the_kernel_cache(tmp_path, monkeypatch):
    """Another checkpoint of one architecture, or a rerun: the graphs are the same, so inductor's
    on-disk cache must serve their code (before, every compile bypassed it: "No shape env")."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "kernels"))  # empty: the first must miss
    model, x, y = _dln(3, widths=(5, 7, 6))
    run = dict(chains=2, steps=60, step_size=2e-5, localization=10.0, nbeta=300.0, batch_size=64, seed=2,
               accept_every=10, counter_noise=True)
    first, second = GradientCompiler(after_seconds=0.0), GradientCompiler(after_seconds=0.0)
    a = run_sgld(model, x, y, _mse, compiler=first, **run)
    b = run_sgld(model, x, y, _mse, compiler=second, **run)
    assert first.state == second.state == "compiled", (first.summary(), second.summary())
    assert first.graphs_compiled == second.graphs_compiled >= 2  # the gradient and the move
    assert first.graphs_cached == 0 and "cache" not in first.summary()
    assert second.graphs_cached == second.graphs_compiled
    assert second.summary().endswith("its code from torch's on-disk kernel cache)")
    torch.testing.assert_close(b.losses, a.losses, rtol=0, atol=0)  # the same code, the same chains


@pytest.mark.skipif(sys.platform != "linux", reason="runs a child interpreter with a broken compiler path")
def test_without_a_cpp_compiler_the_estimate_goes_on_eagerly(tmp_path):
    """As in an image without g++: inductor cannot build its kernels. A child interpreter with an
    empty kernel cache (nothing to reuse) and CXX pointing nowhere."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        import torch
        from tests.unit.test_compiled_gradient import _dln, _mse
        from lambdascope.llc.compiled import GradientCompiler
        from lambdascope.llc.sgld import run_sgld
        model, x, y = _dln(2, widths=(5, 8, 4))
        run = dict(chains=2, steps=200, step_size=2e-5, localization=10.0, nbeta=300.0, batch_size=64, seed=1)
        compiler = GradientCompiler(after_seconds=0.0)
        broken = run_sgld(model, x, y, _mse, compiler=compiler, **run)
        eager = run_sgld(model, x, y, _mse, **run)
        print(json.dumps({{"state": compiler.state, "summary": compiler.summary(),
                          "same": bool(torch.equal(broken.losses, eager.losses))}}))
    """)
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"),
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "kernels"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["state"] == "failed"
    assert out["summary"].startswith("compiling the gradient failed (") and "compiler" in out["summary"].lower()
    assert out["same"], "a failed compile must leave the chains exactly as eager sampling runs them"


def test_an_exported_transformer_compiles_and_follows_the_eager_chains():
    """The layers of the audited archives (embeddings, LayerNorm, attention as plain ops, GELU,
    dropout in eval mode, a fixed buffer) through an exported program, traced to a graph without
    dynamo: the same chains as eager, up to float rounding, stepped in groups of two and one (a
    graph for each group size)."""
    from lambdascope.llc.sgld import prepare_for_sampling
    from tests.tiny_transformer import VOCAB, train_tiny_transformer

    model, x, y = train_tiny_transformer(n=128, seed=1)
    program = torch.export.export(model, (x[:8],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    exported = prepare_for_sampling(program.module())

    def token_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(out.reshape(-1, VOCAB), target.reshape(-1))

    run = dict(chains=3, steps=80, step_size=1e-5, localization=100.0, nbeta=50.0, batch_size=16, seed=2,
               accept_every=10, chains_per_pass=2, counter_noise=True)
    eager = run_sgld(exported, x, y, token_loss, **run)
    compiler = GradientCompiler(after_seconds=0.0)
    compiled = run_sgld(exported, x, y, token_loss, compiler=compiler, **run)
    assert compiler.state == "compiled", compiler.summary()
    torch.testing.assert_close(compiled.losses, eager.losses, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(compiled.final, eager.final, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(compiled.final[0], compiled.final[2])  # the chains moved apart


class _Scaled(torch.nn.Module):
    """A DLN whose output is scaled by a tensor that is neither parameter nor buffer: exported, it
    becomes a constant of the program."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner, self.scale = inner, torch.tensor([0.5, 1.0, 1.5, 2.0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.scale


@pytest.mark.parametrize("case", ["float64", "full_batch", "restricted", "buffers", "groups", "constant"])
def test_compiled_chains_follow_the_eager_ones_in_every_layout(case):
    """float64 weights, a batch as large as the data (x shared by the chains), a restricted LLC
    (the other parameters fixed, passed in beside the sampled ones), buffers (BatchNorm in eval
    mode), chains in groups and an exported program's tensor constant: each compiled, each giving
    the eager chains."""
    model, x, y = _dln(20, widths=(5, 7, 4), n=300)
    run = dict(chains=2, steps=60, step_size=2e-5, localization=10.0, nbeta=300.0, batch_size=32, seed=3,
               accept_every=10, counter_noise=True)
    if case == "float64":
        model, x, y = model.double(), x.double(), y.double()
    elif case == "full_batch":
        run["batch_size"] = x.shape[0]
    elif case == "restricted":
        run["params"] = ["1.weight"]
    elif case == "groups":
        run.update(chains=3, chains_per_pass=2)  # a group of two, then one: two graphs
    elif case == "constant":
        scaled = _Scaled(model)
        model = torch.export.export(scaled, (x[:8],), dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
        with torch.no_grad():
            y = model(x)
    else:
        norm = torch.nn.BatchNorm1d(7)
        with torch.no_grad():
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
        model = torch.nn.Sequential(model[0], norm, model[1]).eval()
        with torch.no_grad():
            y = model(x)
    eager = run_sgld(model, x, y, _mse, **run)
    compiler = GradientCompiler(after_seconds=0.0)
    compiled = run_sgld(model, x, y, _mse, compiler=compiler, **run)
    assert compiler.state == "compiled", compiler.summary()
    tol = dict(rtol=1e-9, atol=1e-12) if case == "float64" else dict(rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(compiled.losses, eager.losses, **tol)
    torch.testing.assert_close(compiled.final, eager.final, **tol)


def test_a_failure_after_a_first_graph_says_when_the_estimate_went_eager(monkeypatch):
    """Chains in groups of two and one: the second group size needs a graph of its own. If that
    one fails to compile, the chains go on eagerly, and the summary says a graph had run."""
    import lambdascope.llc.compiled as compiled_module

    built = []
    real = compiled_module._compile

    def second_fails(fn, inputs):
        built.append(inputs[0].shape[0])
        if len(built) > 1:
            raise RuntimeError("no compiler for this one")
        return real(fn, inputs)

    monkeypatch.setattr(compiled_module, "_compile", second_fails)
    model, x, y = _dln(30, widths=(4, 6, 3), n=200)
    run = dict(chains=3, steps=40, step_size=2e-5, localization=10.0, nbeta=300.0, batch_size=32, seed=5,
               accept_every=0, chains_per_pass=2, counter_noise=False)  # the gradient's graphs only
    compiler = GradientCompiler(after_seconds=0.0)
    sampled = run_sgld(model, x, y, _mse, compiler=compiler, **run)
    eager = run_sgld(model, x, y, _mse, **run)
    assert built == [2, 1] and compiler.state == "failed"
    assert "then compiling a graph for another group of chains failed (RuntimeError: no compiler for this one)" \
        in compiler.summary()
    torch.testing.assert_close(sampled.losses, eager.losses, rtol=1e-4, atol=1e-7)


def _kronecker_m(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    """A Kronecker M from a scored run's gradients on the DLN (its three weight matrices rotated)."""
    from lambdascope.llc import preconditioner

    gathered = run_sgld(model, x, y, _mse, chains=4, steps=400, step_size=2e-5, localization=10.0, nbeta=300.0,
                        batch_size=64, seed=1, accept_every=1, moments="kronecker").moments
    pre = preconditioner.estimate(gathered, 10.0, "kronecker")
    assert pre is not None and len(pre.bases) == 3
    return pre


def test_preconditioned_chains_compiled_follow_the_eager_ones():
    """The default audit's move (a Kronecker M, every 10th move scored): the gradient and the move
    compiled give the eager chains, losses, acceptance and gathered moments."""
    model, x, y = _dln(40)
    run = dict(chains=3, steps=300, step_size=2e-5, localization=10.0, nbeta=300.0, batch_size=64, seed=4,
               accept_every=10, precondition=_kronecker_m(model, x, y), moments="kronecker", counter_noise=True)
    eager = run_sgld(model, x, y, _mse, **run)
    compiler = GradientCompiler(after_seconds=0.0)
    compiled = run_sgld(model, x, y, _mse, compiler=compiler, **run)
    assert compiler.summary().startswith("gradient and preconditioned move with Philox noise compiled"), \
        compiler.summary()
    torch.testing.assert_close(compiled.losses, eager.losses, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(compiled.final, eager.final, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(compiled.acceptance, eager.acceptance, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(compiled.moments["rows"], eager.moments["rows"], rtol=1e-3, atol=1e-6)
    assert not torch.allclose(compiled.final[0], compiled.final[1])  # the chains moved apart


def test_a_move_that_fails_to_compile_goes_on_eagerly_and_says_so(monkeypatch):
    """Compiling the gradient works, compiling the move does not: the chains are the eager ones
    (the failed move redone eagerly, nothing lost) and the summary names the failure."""
    import lambdascope.llc.compiled as compiled_module

    real = compiled_module._compile

    def move_fails(fn, inputs):
        if fn.__name__ == "noisy":  # preconditioner.step_function's, drawing its own noise
            raise RuntimeError("no graph for the move")
        return real(fn, inputs)

    monkeypatch.setattr(compiled_module, "_compile", move_fails)
    model, x, y = _dln(41)
    run = dict(chains=2, steps=60, step_size=2e-5, localization=10.0, nbeta=300.0, batch_size=64, seed=6,
               accept_every=10, precondition=_kronecker_m(model, x, y))
    eager = run_sgld(model, x, y, _mse, **run)
    compiler = GradientCompiler(after_seconds=0.0)
    sampled = run_sgld(model, x, y, _mse, compiler=compiler, **run)
    assert compiler.state == "compiled"
    assert compiler.summary().startswith("gradient compiled with torch's inductor")
    assert compiler.summary().endswith(
        "; compiling the preconditioned move with Philox noise failed (RuntimeError: no graph for the move), "
        "it ran eagerly")
    torch.testing.assert_close(sampled.losses, eager.losses, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(sampled.final, eager.final, rtol=1e-4, atol=1e-6)
