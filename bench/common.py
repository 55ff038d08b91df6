"""Helpers shared by the benchmarks that run OUR estimator (main venv only; imports services)."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402

import dln  # noqa: E402
from lambdascope.llc.llc import SGLDConfig, estimate_llc  # noqa: E402


def make_config(*, chains: int, steps: int, burnin: int, step_size: float | None, seed: int,
                nbeta: float, localization: float = dln.LOCALIZATION,
                batch_size: int = dln.BATCH_SIZE, **extra) -> SGLDConfig:
    """Explicit settings; ``step_size=None`` asks for automatic calibration.

    ``extra`` fields (e.g. accept_every) are passed only if this SGLDConfig has them, so the
    benchmarks run against the estimator as it is on the branch they are run from."""
    known = {f.name for f in dataclasses.fields(SGLDConfig)}
    return SGLDConfig(chains=chains, draws=steps - burnin, burnin=burnin, thin=1, step_size=step_size,
                      localization=localization, nbeta=nbeta, batch_size=batch_size, seed=seed,
                      **{k: v for k, v in extra.items() if k in known})


def _get(obj, name):
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def chosen_step_size(result, config: SGLDConfig) -> float | None:
    """The ε the estimator actually used: the calibration's choice when it ran, else the config's.

    Looks in the places the calibration work may put it (result.calibration.chosen_step_size,
    result.step_size, result.config.step_size) so this keeps working whichever lands.
    """
    calib = _get(result, "calibration")
    for value in (_get(calib, "chosen_step_size"), _get(calib, "step_size"), _get(result, "step_size"),
                  _get(_get(result, "config"), "step_size"), config.step_size):
        if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
            return float(value)
    return None


def calibration_seconds(result) -> float | None:
    for value in (_get(_get(result, "calibration"), "seconds"), _get(result, "calibration_seconds")):
        if isinstance(value, (int, float)):
            return float(value)
    return None


def segment_llcs(traces: list[list[float]], init_loss: float, nbeta: float, segments: int = 10) -> list[float]:
    """nβ·(mean loss − L_n(w*)) over each tenth of the chains (all chains pooled): a trend check."""
    t = torch.tensor(traces, dtype=torch.float64)
    steps = t.shape[1]
    edges = [round(i * steps / segments) for i in range(segments + 1)]
    return [nbeta * (t[:, a:b].mean().item() - init_loss) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def run_ours(case: dln.Case, config: SGLDConfig, *, problem=None) -> dict:
    """Run estimate_llc on a case; returns a JSON-able record (theory, estimate, timings, ε)."""
    model, x, y = problem if problem is not None else dln.make_problem(case)
    began = time.perf_counter()
    result = estimate_llc(model, x, y, dln.mse, config, device="cpu")
    wall = time.perf_counter() - began
    lam = case.theory_lambda()
    steps = len(result.traces[0])
    return {
        "case": case.name,
        "widths": list(case.widths),
        "layers": case.layers,
        "rank": case.rank,
        "d": case.num_parameters,
        "lambda_theory": lam,
        "lambda_hat": result.mean,
        # as sampled, and the step's predicted bias taken off it (where the estimate corrects it)
        "uncorrected": _get(result, "uncorrected_mean"),
        "predicted_bias": _get(result, "bias_estimate"),
        "std": result.std,
        "per_chain": result.per_chain,
        "rel_err": result.mean / lam - 1.0,
        "init_loss": result.init_loss,
        "nbeta": result.nbeta,
        "step_size": chosen_step_size(result, config),
        "calibrated": config.step_size is None,
        "calibration_seconds": calibration_seconds(result),
        "wall_seconds": wall,
        "sampling_seconds": result.sampling_seconds,
        "ms_per_chain_step": 1e3 * result.sampling_seconds / (steps * config.chains),
        "vectorized": result.vectorized,
        "acceptance": _get(result, "acceptance"),
        "segment_llc": segment_llcs(result.traces, result.init_loss, result.nbeta),
    }


def audited_case(results: str, name: str) -> dict:
    """The row of case ``name`` in a bench/results/default_audit_run*.json (its case, λ, our and
    devinterp's results); KeyError naming the file when it has none."""
    for row in json.loads(Path(results).read_text())["rows"]:
        if row["case"]["name"] == name:
            return row
    raise KeyError(f"no case {name!r} in {results}")


def dense_hessian(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                  loss_fn=torch.nn.functional.mse_loss) -> tuple[torch.Tensor, torch.Tensor]:
    """(w* flattened, ∇²L at w*) in float64 for the mean loss L of ``model`` on (x, y) (MSE unless
    ``loss_fn`` says otherwise; integer targets stay integers): the dense D × D matrix, one
    backward per coordinate (D up to about 10,000 on 23 GB)."""
    from torch.func import functional_call

    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    double = copy.deepcopy(model).double()
    xd, yd = x.double(), (y.double() if y.is_floating_point() else y)

    def loss(flat: torch.Tensor) -> torch.Tensor:
        params, offset = {}, 0
        for name, shape in zip(names, shapes):
            params[name] = flat[offset:offset + shape.numel()].view(shape)
            offset += shape.numel()
        return loss_fn(functional_call(double, params, (xd,)), yd)

    hessian = torch.autograd.functional.hessian(loss, flat0, vectorize=False)
    return flat0, (hessian + hessian.T) / 2


def kronecker_warmup(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, nbeta: float, step_size: float):
    """(the run_sgld settings of an audit's chains, a 1,000-step warm-up trace at ``step_size``
    from w*, the Kronecker M estimated from it): the frozen M the sampler studies start from."""
    from lambdascope.llc import preconditioner, sgld
    from lambdascope.llc.compiled import GradientCompiler
    from lambdascope.llc.localization import GAMMA_MAX

    config = SGLDConfig()
    gamma = GAMMA_MAX  # what the default rule gives every benchmark DLN (nβ·h_top ≥ 5.6e4)
    kwargs = dict(nbeta=nbeta, localization=gamma, batch_size=config.batch_size,
                  chains=config.chains, compiler=GradientCompiler(after_seconds=0.0))
    warm = sgld.run_sgld(model, x, y, torch.nn.functional.mse_loss, steps=1000, step_size=step_size, seed=1,
                         accept_every=2, moments="kronecker", **kwargs)
    return kwargs, warm, preconditioner.estimate(warm.moments, gamma, "kronecker")


def train_classifier(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
                     epochs: int, batch_size: int = 64) -> torch.nn.Module:
    """``epochs`` of minibatch cross-entropy on reshuffled (x, y), in eval mode after: a classifier
    trained as a user would, for the benchmarks that audit one (its seed is the caller's)."""
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), batch_size):
            batch = order[i:i + batch_size]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
    return model.eval()


def machine() -> dict:
    """The host a benchmark ran on. The model name alone can hide a different chip ("AMD EPYC" has
    been both an AVX2 part and a Zen 5 with AVX-512 here, where torch's kernels and MKL's differ),
    so the CPU family and model and the vector instructions torch uses are recorded too."""
    cpu, family, model = platform.processor() or "?", "?", "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name":
                cpu = value
            elif key == "cpu family":
                family = value
            elif key == "model":
                model = value
            elif not line.strip():
                break  # the first processor's block is enough
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_family_model": f"{family}/{model}",
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_at_start": os.getloadavg(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    }


def config_dict(config: SGLDConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(config).items()}


def write_json(path: Path, payload: dict, *, final: bool = True) -> None:
    """Write ``path.tmp`` (partial results as a run goes) and, when ``final``, rename it to ``path``:
    a killed run leaves only the gitignored .tmp, never half a results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    if final:
        tmp.replace(path)


def add_run_flags(p: "argparse.ArgumentParser", results: str, *, quick: str, check: str,
                  threads: int | None = 1) -> None:
    """The flags every result-producing benchmark takes: --threads, --quick (what the harness
    check shortens), --out (bench/results/<results>) and --check (what failing means)."""
    shown = "torch's, 2 here" if threads is None else threads
    p.add_argument("--threads", type=int, default=threads, help=f"torch threads (default {shown})")
    p.add_argument("--quick", action="store_true", help=f"harness check: {quick}")
    p.add_argument("--out", default=str(RESULTS / results))
    p.add_argument("--check", action="store_true", help=f"exit 1 when {check}")
