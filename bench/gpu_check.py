"""The estimator on a CUDA device, in one short run sized for a lent GPU machine (not run by make
test; CI has no GPU).

    python3 bench/gpu_check.py --out $OUT/gpu_check.json          # on the GPU machine (~6 min)
    .venv/bin/python bench/gpu_check.py --device cpu --quick       # harness check here

It imports only the estimator's core (lambdascope.llc), the benchmarks' DLN and transformer
definitions and bench/compile_gain.py's sampling run, so it runs with the torch the GPU machine
has, without the platform's services.
Sections, each stopped at its share of ``--budget`` seconds, results written after each one:

1. parity: one DLN sampled at fixed settings (4 chains x 2000 steps, ε 5e-7, γ 1, batch 500, seed
   0, accept_every 0) on the CPU and on the device: λ̂ must agree within the chains' combined
   spread (the two devices draw different random streams, so only statistically);
2. speed: ms per chain-step on the device, eager and compiled (traced and compiled by inductor, as an audit
   compiles after 10 s of sampling), against the bare forward+backward floor of one batch of 500
   x chains, on three DLNs of 864-15,200 parameters at 4 chains and, to show what batched chains buy
   on a GPU, at 16;
3. default audits: ``estimate_llc`` with the default SGLDConfig (run until trusted) on DLNs of
   bench/results/default_audit_run9.json (λ known), λ̂ against theory and the CPU audit of that run;
4. the ~1M-parameter transformer (bench/transformer_model.py, briefly trained on the device):
   ms per step of 4 chains together and one per pass, eager and compiled, and a default estimate
   capped by ``max_seconds`` (a flag, stated), with its peak device memory.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
for _p in (str(BENCH.parent), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import compile_gain  # noqa: E402
import dln  # noqa: E402
import torch  # noqa: E402
from transformer_model import Transformer, make_data, token_loss, train  # noqa: E402

from lambdascope.llc.compiled import GradientCompiler  # noqa: E402
from lambdascope.llc.llc import SGLDConfig, estimate_llc  # noqa: E402
from lambdascope.llc.sgld import prepare_for_sampling, run_sgld  # noqa: E402

RUN9 = BENCH / "results" / "default_audit_run9.json"
SPEED_CASES = ("speed-864", "L4-wide", "L2-widest")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def on(problem, device: torch.device):
    model, x, y = problem
    return model.to(device), x.to(device), y.to(device)


def sample(problem, steps: int, chains: int, compiler: GradientCompiler | None) -> tuple[float, float, float]:
    """(seconds, λ̂ over the second half, std of the chains' λ̂) at the DLN benchmark's settings."""
    seconds, per_chain = compile_gain.sample(problem, steps, compiler, chains)
    return seconds, per_chain.mean().item(), per_chain.std().item() if chains > 1 else 0.0


def floor_ms(problem, chains: int, passes: int, device: torch.device) -> float:
    """ms of ``chains`` bare forward+backward passes of one batch of 500 through the nn.Module."""
    model, x, y = problem
    xb, yb = x[: dln.BATCH_SIZE], y[: dln.BATCH_SIZE]
    for _ in range(20):
        model.zero_grad(set_to_none=True)
        dln.mse(model(xb), yb).backward()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(passes):
        model.zero_grad(set_to_none=True)
        dln.mse(model(xb), yb).backward()
    sync(device)
    model.zero_grad(set_to_none=True)
    return 1e3 * chains * (time.perf_counter() - t0) / passes


class Budget:
    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def parity(device: torch.device, steps: int) -> dict:
    case = dln.SPEED_CASE
    cpu_s, cpu_llc, cpu_std = sample(dln.make_problem(case), steps, 4, None)
    dev_s, dev_llc, dev_std = sample(on(dln.make_problem(case), device), steps, 4, None)
    spread = math.hypot(cpu_std, dev_std)
    row = {"case": case.name, "steps": steps, "cpu_llc": cpu_llc, "cpu_std": cpu_std, "device_llc": dev_llc,
           "device_std": dev_std, "agree": abs(cpu_llc - dev_llc) <= spread, "cpu_seconds": cpu_s,
           "device_seconds": dev_s}
    print(f"parity {case.name}: cpu λ̂ {cpu_llc:.2f} ± {cpu_std:.2f}, {device.type} λ̂ {dev_llc:.2f} ± {dev_std:.2f}: "
          f"{'agree' if row['agree'] else 'DISAGREE'} (|Δ| {abs(cpu_llc - dev_llc):.2f}, spread {spread:.2f})", flush=True)
    return row


def speed(device: torch.device, names: list[str], steps: int, budget: Budget) -> list[dict]:
    rows = []
    for name in names:
        if budget.left() < 20:
            print(f"speed: budget spent before {name}", flush=True)
            break
        problem = on(dln.make_problem(dln.case_by_name(name)), device)
        for chains in (4, 16):
            if budget.left() < 20:
                break
            compiler = GradientCompiler(after_seconds=0.0)
            began = time.perf_counter()
            sample(problem, 20, chains, compiler)  # compiles here (or fails), outside the timings
            compile_wall = time.perf_counter() - began
            sample(problem, 20, chains, None)
            eager, compiled = [], []
            for _ in range(2):
                e = sample(problem, steps, chains, None)
                c = sample(problem, steps, chains, compiler)
                eager.append(e[0])
                compiled.append(c[0])
            per = 1e3 / (chains * steps)
            row = {"case": name, "d": sum(p.numel() for p in problem[0].parameters()), "chains": chains,
                   "steps": steps, "eager_ms": min(eager) * per, "compiled_ms": min(compiled) * per,
                   "floor_ms": floor_ms(problem, chains, 200, device) / chains,
                   "compile_state": compiler.state, "compile_failure": compiler.failure,
                   "compile_seconds": compiler.compile_seconds, "compile_wall": compile_wall,
                   "eager_llc": e[1], "compiled_llc": c[1]}
            rows.append(row)
            print(f"speed {name:10s} d {row['d']:6d} chains {chains:2d}: eager {row['eager_ms']:.4f} ms, compiled "
                  f"{row['compiled_ms']:.4f} ms ({compiler.state}, compile {compile_wall:.1f} s), floor "
                  f"{row['floor_ms']:.4f} ms per chain-step; λ̂ {e[1]:.1f} / {c[1]:.1f}", flush=True)
    return rows


def default_audits(device: torch.device, names: list[str], budget: Budget, max_seconds: float) -> list[dict]:
    run9 = {r["case"]["name"]: r for r in json.loads(RUN9.read_text())["rows"]}
    rows = []
    for name in names:
        if budget.left() < 30:
            print(f"default audits: budget spent before {name}", flush=True)
            break
        cpu = run9[name]
        case = dln.case_from_dict(cpu["case"])
        model, x, y = on(dln.make_problem(case), device)
        config = SGLDConfig(max_seconds=min(max_seconds, budget.left() - 10))
        began = time.perf_counter()
        res = estimate_llc(model, x, y, dln.mse, config, device=device)
        wall = time.perf_counter() - began
        lam = cpu["lambda"]
        stop = res.stopping
        row = {"case": name, "d": case.num_parameters, "lambda": lam, "lambda_hat": res.mean, "std": res.std,
               "rel_err": res.mean / lam - 1, "stop": stop.reason, "steps": stop.steps, "summary": stop.summary,
               "seconds": wall, "sampling_seconds": res.sampling_seconds,
               "calibration_seconds": res.calibration.seconds if res.calibration else None,
               "chain_steps_per_second": res.chain_steps_per_second, "compile": res.compile_summary,
               "max_seconds": config.max_seconds,
               "cpu_run9": {k: cpu["ours"].get(k) for k in ("lambda_hat", "verdict", "stop", "steps", "wall_seconds")},
               "cpu_run9_rel_err": cpu["ours_rel_err"]}
        rows.append(row)
        print(f"default {name}: d {row['d']}, λ {lam:g}, λ̂ {res.mean:.1f} ({100 * row['rel_err']:+.2f}%), "
              f"{stop.reason} at {stop.steps} steps in {wall:.1f} s ({res.chain_steps_per_second:.0f} chain-steps/s); "
              f"CPU run 9: {100 * cpu['ours_rel_err']:+.2f}%, {cpu['ours']['stop']} at {cpu['ours']['steps']} steps, "
              f"{cpu['ours']['wall_seconds']:.1f} s through the CLI", flush=True)
    return rows


def transformer(device: torch.device, budget: Budget, max_seconds: float, train_steps: int) -> dict:
    torch.manual_seed(0)
    model = Transformer(64, 8, 128, 5, 4)
    x, y = make_data(4096, 64, 8, seed=1)
    model, x, y = model.to(device), x.to(device), y.to(device)
    began = time.perf_counter()
    loss = train(model, x, y, train_steps, 64, seed=2)
    out = {"d": sum(p.numel() for p in model.parameters()), "train_steps": train_steps,
           "train_seconds": time.perf_counter() - began, "final_loss": loss, "passes": []}
    print(f"transformer d {out['d']:,}: trained {train_steps} steps in {out['train_seconds']:.1f} s, loss {loss:.4f}",
          flush=True)
    exported = torch.export.export(model, (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    program = prepare_for_sampling(exported.module())
    for per_pass, compiled in ((4, False), (1, False), (4, True)):
        if budget.left() < 60:
            break
        compiler = GradientCompiler(after_seconds=0.0) if compiled else None
        kw = dict(chains=4, step_size=1e-7, localization=10.0, nbeta=1000.0, batch_size=256, seed=0,
                  accept_every=0, chains_per_pass=per_pass, compiler=compiler)
        began = time.perf_counter()
        run_sgld(program, x, y, token_loss, steps=5, **kw)  # warm-up (and the compile)
        first = time.perf_counter() - began
        trace = run_sgld(program, x, y, token_loss, steps=50, **kw)
        row = {"chains_per_pass": per_pass, "compiled": compiled, "ms_per_step": 1e3 * trace.seconds / 50,
               "first_call_seconds": first, "compile": compiler.summary() if compiler else "eager"}
        out["passes"].append(row)
        print(f"  {per_pass} chain(s) per pass{' compiled' if compiled else ''}: {row['ms_per_step']:.1f} ms per step "
              f"of 4 chains (first call {first:.1f} s)", flush=True)
    if budget.left() > 40:
        config = SGLDConfig(max_seconds=min(max_seconds, budget.left() - 20))
        began = time.perf_counter()
        res = estimate_llc(exported.module(), x, y, token_loss, config, device=device)
        out["estimate"] = {"max_seconds": config.max_seconds, "lambda_hat": res.mean, "std": res.std,
                           "stop": res.stopping.reason, "steps": res.stopping.steps, "summary": res.stopping.summary,
                           "seconds": time.perf_counter() - began, "peak_memory_mib": res.peak_memory_bytes / 2**20,
                           "peak_memory_kind": res.peak_memory_kind,
                           "chains_per_pass": res.chain_plan.per_pass if res.chain_plan else None,
                           "chain_steps_per_second": res.chain_steps_per_second, "compile": res.compile_summary}
        e = out["estimate"]
        print(f"  default estimate (max_seconds {config.max_seconds:.0f}): λ̂ {e['lambda_hat']:.1f} ± {e['std']:.1f}, "
              f"{e['stop']} at {e['steps']} steps in {e['seconds']:.1f} s, peak {e['peak_memory_mib']:.0f} MiB, "
              f"{e['chains_per_pass']} chains per pass; {e['compile']}", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget", type=float, default=330.0, help="seconds for all sections together (default 330)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a check of the harness")
    p.add_argument("--out", default=str(BENCH / "results" / "gpu_check.json"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    budget = Budget(args.budget)
    env = {"torch": torch.__version__, "python": sys.version.split()[0], "device": str(device),
           "argv": sys.argv[1:], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(env), flush=True)
    result: dict = {"env": env}

    def save() -> None:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")

    quick = args.quick

    def share(fraction: float) -> Budget:
        return Budget(min(fraction * args.budget, budget.left()))

    sections = [
        ("parity", lambda: parity(device, 200 if quick else 2000)),
        ("speed", lambda: speed(device, ["speed-864"] if quick else list(SPEED_CASES), 100 if quick else 1000,
                                share(0.30))),
        ("default_audits", lambda: default_audits(device, ["R8-L2"] if quick else ["R3-L5", "R0-L3"], share(0.33),
                                                  20 if quick else 90)),
        ("transformer", lambda: transformer(device, share(1.0), 10 if quick else 60, 20 if quick else 400)),
    ]
    for name, run in sections:
        began = time.perf_counter()
        try:
            result[name] = run()
        except Exception as err:  # noqa: BLE001 - a failed section is reported, the others still run
            import traceback

            traceback.print_exc()
            result[name] = {"error": f"{type(err).__name__}: {err}"}
        result.setdefault("section_seconds", {})[name] = time.perf_counter() - began
        save()
    print(f"wrote {args.out} ({budget.left():.0f} s of the budget left)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
