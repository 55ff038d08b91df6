"""Judge stopping rules offline on long default runs (not run by make test).

A default audit stops when its stopping rule says so, so one run shows the rule's choice and
nothing after it. This records a default estimate that never converges (``until_ess`` out of
reach) to its 100,000-step cap, keeping what the rule and the bias correction look at (losses,
the scored steps' curvature and gradient noise, the chunks and the step sizes), then replays the
run's chunk loop to see where a rule would have stopped and what λ̂ it would have reported:

    .venv/bin/python bench/stopping_replay.py record --seed 675859054 --case R3-L5   # ~4-8 min
    .venv/bin/python bench/stopping_replay.py replay            # every recorded trace
    .venv/bin/python bench/stopping_replay.py climb --case R1-L3   # λ̂, bias, λ̂ − bias over the run
    .venv/bin/python bench/stopping_replay.py jumps             # at each lowered step: raw vs predicted

``--seed`` is a ``bench/default_audit.py`` suite seed and ``--case`` a case of its draw; the
estimate is in process (the CLI samples the exported program: the same up to float rounding).
Traces go to bench/results/traces/ (not committed: recording them again gives the same numbers).
Replayed rules: the stopping rule as it stands (``settle`` 1: a window restarted by a lowered step
must span a doubling of the chains' age), with ``settle`` 0.5 and 0, at step caps 25k-100k.
docs/benchmarks.md §4o has the results.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import common  # sets sys.path for dln and the product
import default_audit
import dln
import numpy as np
import torch

import lambdascope.llc.llc as llc_module
from lambdascope.llc import SGLDConfig, stopping
from lambdascope.llc.calibration import predicted_bias

TRACES = Path(__file__).resolve().parent / "results" / "traces"


def record(seed: int, name: str, threads: int, folder: Path, localization: float | None = None) -> Path:
    """Run the default estimate of case ``name`` of suite ``seed`` (at ``localization`` γ when
    given) to its step cap and save it."""
    torch.set_num_threads(threads)
    cases, _, _ = default_audit.draw_cases(random.Random(seed), 10, "cuts")
    case = next((c for c in cases if c.name == name), None)
    if case is None:
        raise SystemExit(f"no case {name} in suite seed {seed}: {', '.join(c.name for c in cases)}")
    model, x, y = dln.make_problem(case)
    # The estimate keeps only the losses in its result; the chunks' retune decisions and the
    # final trace (curvature, gradient noise) are caught on their way through these two calls.
    chunks, traces = [], []
    retune, bias = llc_module.retune, llc_module.predicted_bias

    def caught_retune(result, part, step_size, *rest):
        smaller = retune(result, part, step_size, *rest)
        chunks.append([int(part.losses.shape[1]), step_size, None if smaller is None else smaller[0]])
        return smaller

    def caught_bias(trace, from_step, step_size):
        traces.append(trace)
        return bias(trace, from_step, step_size)

    llc_module.retune, llc_module.predicted_bias = caught_retune, caught_bias
    began = time.perf_counter()
    try:
        config = SGLDConfig(until_ess=1e12)
        if localization is not None:
            config = SGLDConfig(until_ess=1e12, localization=localization)
        result = llc_module.estimate_llc(model, x, y, dln.mse, config, device="cpu")
    finally:
        llc_module.retune, llc_module.predicted_bias = retune, bias
    trace, lam = traces[-1], case.theory_lambda()
    meta = dict(name=name, seed=seed, lam=lam, nbeta=result.nbeta, init_loss=result.init_loss,
                warm=result.stopping.warmup_steps, warm_step=result.calibration.warmup_step_size, chunks=chunks,
                llc=result.mean, seconds=time.perf_counter() - began, threads=threads, localization=result.localization)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"{seed}-{name}.npz" if localization is None else f"{seed}-{name}-gamma{localization:g}.npz")
    np.savez_compressed(path, losses=trace.losses.numpy(), accept_steps=trace.accept_steps.numpy(),
                        curvature=trace.curvature.numpy(), grad_noise=trace.grad_noise.numpy(), meta=json.dumps(meta))
    print(f"{name}: λ {lam:g}, λ̂ at the cap {result.mean:.1f} ({100 * (result.mean - lam) / lam:+.2f}%), "
          f"{result.stopping.steps} steps, {meta['seconds']:.0f} s → {path}")
    return path


def load(path: Path) -> dict:
    z = np.load(path)
    return dict(losses=z["losses"].astype(np.float64), scored=z["accept_steps"],
                curvature=z["curvature"].astype(np.float64), noise=z["grad_noise"].astype(np.float64),
                **json.loads(str(z["meta"])))


def bias(t: dict, lo: int, hi: int, step_size: float) -> float:
    """The estimator's predicted bias (calibration.predicted_bias) from the scored steps in [lo, hi)."""
    sel = (t["scored"] >= lo) & (t["scored"] < hi)
    window = SimpleNamespace(accept_steps=torch.from_numpy(t["scored"][sel]),
                             curvature=torch.from_numpy(t["curvature"][:, sel]),
                             grad_noise=torch.from_numpy(t["noise"][:, sel]))
    return predicted_bias(window, 0, step_size) if sel.any() else math.nan


def replay(t: dict, settle: float, cap: int) -> tuple[int, bool, float, list[str]]:
    """(steps at the stop, converged, λ̂'s relative error, what was missing) of the run's chunk
    loop (llc._Sampler._until_trusted) under the rule with ``settle`` × the age, capped at ``cap``;
    at a cap, what was missing ends with the doublings of the age the drift check spanned."""
    warm, losses, rule = t["warm"], t["losses"], stopping.StoppingRule()
    done = origin = retunes = 0
    clock, step = warm * t["warm_step"], t["chunks"][0][1]
    for steps, _, smaller in t["chunks"]:
        done += steps
        if smaller is not None and done < cap - warm:
            clock += (done - origin) * step
            step, origin, retunes = smaller, done, retunes + 1
            continue
        age = clock / step
        check = stopping.assess(losses[:, warm + origin:warm + done], t["nbeta"], t["init_loss"], rule, 1, age,
                                settle * age if retunes else 0.0)
        if check.met or done >= cap - warm:
            if not check.met:  # the drift's error is in its text; how much of the age its windows span
                doublings = stopping.drift_windows(done - origin, check.burnin, age)[2]
                check.missing.append(f"({doublings:.2f} doublings spanned)")
            burnin = warm + origin + check.burnin
            llc = t["nbeta"] * (losses[:, burnin:warm + done].mean() - t["init_loss"]) - bias(t, burnin, 10**12, step)
            return warm + done, check.met, (llc - t["lam"]) / t["lam"], check.missing
    raise ValueError("the trace ends before its cap")


def lowered_steps(t: dict) -> list[tuple[int, float, float]]:
    """(step index in the trace, step size before, after) of each lowered step."""
    out, at = [], t["warm"]
    for steps, size, smaller in t["chunks"]:
        at += steps
        if smaller is not None:
            out.append((at, size, smaller))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("record", "replay", "climb", "jumps"))
    p.add_argument("--seed", type=int, help="record: the default_audit suite seed")
    p.add_argument("--case", help="record, climb: the case's name in that draw (e.g. R3-L5)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--localization", type=float, default=None, help="record: γ instead of the default")
    p.add_argument("--traces", type=Path, default=TRACES)
    args = p.parse_args(argv)
    if args.command == "record":
        if args.seed is None or not args.case:
            p.error("record needs --seed and --case")
        record(args.seed, args.case, args.threads, args.traces, args.localization)
        return 0
    paths = sorted(args.traces.glob(f"*-{args.case}*.npz" if args.case else "*.npz"))
    if not paths:
        p.error(f"no recorded traces in {args.traces}: record some first")
    for path in paths:
        t = load(path)
        lowered = ", ".join(f"{s:.3g} → {n:.3g} at {i}" for i, s, n in lowered_steps(t))
        print(f"{t['name']} (suite seed {t['seed']}, γ {t.get('localization', 10.0):g}): λ {t['lam']:g}, warm-up {t['warm']} steps; lowered: {lowered}")
        if args.command == "replay":
            for settle in (1.0, 0.5, 0.0):
                cells = []
                for cap in (25_000, 50_000, 100_000):
                    stop, met, err, missing = replay(t, settle, cap)
                    cells.append(f"cap {cap // 1000}k: {stop:6d} {'ok ' if met else 'cap'} {100 * err:+.2f}%")
                print(f"  settle {settle:g}: " + " | ".join(cells) + (f"  (at 100k missing: {'; '.join(missing)})"
                                                                      if missing else ""))
        elif args.command == "climb":
            energy = t["nbeta"] * (t["losses"] - t["init_loss"])
            lowered, lam = lowered_steps(t), t["lam"]
            edges = [t["warm"] * 1.25**k for k in range(40)]
            edges = sorted({int(e) for e in edges if e < energy.shape[1]} | {energy.shape[1]})
            for lo, hi in zip(edges[:-1], edges[1:]):
                size = next((n for i, _, n in reversed(lowered) if i <= lo), t["chunks"][0][1])
                b = bias(t, lo, hi, size)
                raw = energy[:, lo:hi].mean()
                print(f"  [{lo:6d}, {hi:6d}) ε {size:.3g}: λ̂/λ {raw / lam:.3f}, predicted bias/λ {b / lam:.3f}, "
                      f"(λ̂ − bias)/λ {(raw - b) / lam:.3f}")
        else:
            energy = t["nbeta"] * (t["losses"] - t["init_loss"])
            for at, before, after in lowered_steps(t):
                for width, gap in ((1000, 100), (2000, 300), (4000, 500)):
                    raw = energy[:, at + gap:at + gap + width].mean() - energy[:, at - width:at].mean()
                    predicted = bias(t, at + gap, at + gap + width, after) - bias(t, at - width, at, before)
                    print(f"  at {at:6d} ({before:.3g} → {after:.3g}), windows of {width}: λ̂ moved "
                          f"{100 * raw / t['lam']:+.2f}% of λ, the predicted bias {100 * predicted / t['lam']:+.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
