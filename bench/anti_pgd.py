"""Anticorrelated noise injection (Anti-PGD, Orvieto et al., ICML 2022) reproduced with the trainer core.

    .venv/bin/python bench/anti_pgd.py            # full run: 10 seeds, 4,000 steps (a few minutes at 1 thread)
    .venv/bin/python bench/anti_pgd.py --quick    # harness check: 2 seeds, 1,200 steps (not a result)

Not run by make test. Everything trains through the product: the data from
`lambdascope.training.datasets.quadratic_regression`, the model from `lambdascope.modules.build_module`
(`QuadraticArchitecture`, f(x) = <v⊙v, x>), the loop from `lambdascope.training.loop.train` with its
`NoiseConfig` (PGD / Anti-PGD in the clean-weights form, so the module ends holding the clean z).

1. Quadratically parametrised sparse regression (HaoChen et al. 2021; the paper's toy): d = 100,
   n = 40, w* = 1 on the first 5 coordinates, x ~ N(0, I), y = <w*, x>, 1,000 test examples. For each
   seed s (data seed = run seed = s), GD (noise=None), PGD and Anti-PGD at several σ (Gaussian noise).
   Measured at the final (clean) weights: test loss ||v⊙v − w*||² (exact, from the weights), the
   product's test and training MSE, and Tr ∇²L_train (exact: autograd Hessian of the product's MSE
   w.r.t. v in float64, cross-checked against the closed form).

   Setting, chosen once for all methods (no per-method tuning beyond σ):
   * init scale α = 1 (v = 1, the product's default): the large-init regime in which GD converges
     to an interpolating but dense solution (w = v⊙v: median ||w||₁ 72, 93 of 100 coordinates > 0.1).
     This is the notes' regime: on HaoChen's loss scale (see below) GD's medians over 10 seeds are
     test 19.5 and Tr H 142 (78 / 568 on the product's scale), against the notes' 18.5 / 132.
   * loss scale: the product's MSE is mean((y − f)²); HaoChen et al.'s reference code uses
     0.25·(y − f)², so losses, gradients and Hessians here are 4× theirs. The notes' figures are on
     that 0.25 scale (their test loss is 0.25·||w − w*||² in expectation); this bench reports both.
   * η = 0.025 (≙ 0.1 on the 0.25 scale): ~0.7 of the GD stability limit 2/λ_max(∇²L) ≈ 0.036 at
     the initialisation (λ_max ≈ 53–58 over seeds), the largest comfortable rate, so that the
     noise's effect accrues in few steps (the implicit penalty (σ²/2)·Tr H acts at rate ∝ η σ²).
   * 4,000 full-batch steps (batch 40 = n: GD), noise on for steps 1..2,999 (stop_step = 3,000)
     and then 1,000 noise-free GD steps, so every run ends converging to an interpolating solution
     as in the paper (GD itself has training MSE ~1e-11 by then). The length is what keeps the full
     run within a few minutes at one thread (~0.4–0.8 ms per trainer step here).
   * σ: PGD 0.01, 0.05, 0.1; Anti-PGD 0.05, 0.1 (the notes' values, where the expectations
     below are tested) and 0.01 (shown, not tested: too little noise to expect an effect).

   Expectations (the issue), each printed PASS/FAIL on medians over seeds: Anti-PGD (σ ∈ {0.05, 0.1})
   at least 10× lower test loss than GD; at least 3× lower Tr H than GD; no PGD σ with a lower test
   loss than GD.

2. Widening valley L(u, v) = ½·v²·‖u‖², u ∈ R^10, v ∈ R, from u = 1, v = 1 (a two-parameter-block
   nn.Module here, the product's `NoiseInjection` around torch.optim.SGD, the same call order as the
   trainer): lr 0.05, σ = 0.3, 1,000 steps with noise stopped at step 800. Every v = 0 is a minimum
   with Tr ∇²L = v²·d + ‖u‖² = ‖u‖². GD lands at ‖u‖² ≈ 8.7. Expected: Anti-PGD ends with small
   ‖u‖² (flat), PGD drifts to large ‖u‖². (lr 0.05 rather than the unit test's 0.1: at 0.1, PGD's
   drift reaches the stability edge η‖u‖² = 2 within 1,000 steps and some runs blow up.)

Writes bench/results/anti_pgd.json (per-seed numbers, summaries, the verdicts) and prints a table.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import common  # noqa: E402  (sets sys.path for services and lambdascope)
import torch  # noqa: E402
from torch.func import functional_call  # noqa: E402

from lambdascope.modules import build_module  # noqa: E402
from lambdascope.training import datasets  # noqa: E402
from lambdascope.training.anti_pgd import NoiseInjection  # noqa: E402
from lambdascope.training.loop import NoiseConfig, TrainConfig, train  # noqa: E402
from lambdascope.training.self_modeling import compute_task_loss  # noqa: E402
from lambdascope.v1 import models_pb2  # noqa: E402

DIM, SUPPORT, EXAMPLES, TEST_EXAMPLES = 100, 5, 40, 1_000
INIT_SCALE, LR, STEPS, STOP_STEP = 1.0, 0.025, 4_000, 3_000
PGD_SIGMAS = (0.01, 0.05, 0.1)
ANTI_SIGMAS = (0.01, 0.05, 0.1)
EXPECT_ANTI_SIGMAS = (0.05, 0.1)  # where the expectations on Anti-PGD are tested
REF_SCALE = 0.25  # HaoChen et al.'s loss 0.25·(y − f)²: reference-scale value = this × ours
TEST_RATIO, TRACE_RATIO = 10.0, 3.0

TOY_DIM, TOY_LR, TOY_SIGMA, TOY_STEPS, TOY_STOP = 10, 0.05, 0.3, 1_000, 800


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 10; --quick 2)")
    p.add_argument("--steps", type=int, default=None, help=f"trainer steps (default {STEPS}; --quick 1200)")
    p.add_argument("--stop-step", type=int, default=None,
                   help=f"first noise-free step (default {STOP_STEP}; --quick 900)")
    p.add_argument("--lr", type=float, default=LR)
    p.add_argument("--init-scale", type=float, default=INIT_SCALE)
    p.add_argument("--pgd-sigmas", default=",".join(map(str, PGD_SIGMAS)))
    p.add_argument("--anti-sigmas", default=",".join(map(str, ANTI_SIGMAS)))
    p.add_argument("--toy-seeds", type=int, default=None, help="widening-valley seeds (default 5; --quick 2)")
    common.add_run_flags(p, "anti_pgd.json", quick="2 seeds, 1,200 steps (not a result)",
                         check="an expectation fails")
    return p.parse_args(argv)


# ---------------------------------------------------------------- quadratic regression


def exact_hessian_trace(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Tr ∇²_v of the product's training MSE at the module's weights, float64: (autograd, closed form).

    Closed form for L = mean_i (y_i − <v⊙v, x_i>)²:
    Tr H = (8/n) Σ_j v_j² Σ_i x_ij² − (4/n) Σ_i r_i Σ_j x_ij, with r = y − f."""
    m = copy.deepcopy(module).double()
    x64, y64 = x.double(), y.double()
    v0 = m.v.detach().clone()

    def loss(v):
        return compute_task_loss(functional_call(m, {"v": v}, (x64,)), y64, "mse")

    hess = torch.autograd.functional.hessian(loss, v0)
    n = len(x64)
    r = y64.reshape(-1) - x64 @ (v0 * v0)
    closed = (8 / n) * ((x64 ** 2).sum(0) * v0 ** 2).sum() - (4 / n) * (r * x64.sum(1)).sum()
    return float(torch.trace(hess)), float(closed)


def run_regression(method: str, sigma: float, seed: int, *, steps: int, stop_step: int, lr: float,
                   init_scale: float) -> dict:
    data = datasets.quadratic_regression(
        dim=DIM, support=SUPPORT, examples=EXAMPLES, test_examples=TEST_EXAMPLES, seed=seed)
    module = build_module(models_pb2.Architecture(
        quadratic=models_pb2.QuadraticArchitecture(dim=DIM, init_scale=init_scale)), seed=seed)
    noise = None if method == "gd" else NoiseConfig(kind=method, sigma=sigma, distribution="gaussian",
                                                    stop_step=stop_step)
    config = TrainConfig(steps=steps, batch_size=EXAMPLES, lr=lr, optimizer="sgd", loss="mse",
                         task_outputs=1, seed=seed, noise=noise)
    rec = {"method": method, "sigma": sigma, "seed": seed}
    began = time.perf_counter()
    try:
        result = train(module, data.x_train, data.y_train, data.x_test, data.y_test, config)
    except FloatingPointError as err:  # a diverged run is a result too
        rec.update(diverged=True, error=str(err), seconds=time.perf_counter() - began)
        return rec
    w = module.v.detach().double() ** 2
    w_star = torch.zeros(DIM, dtype=torch.float64)
    w_star[:SUPPORT] = 1.0
    trace, trace_closed = exact_hessian_trace(module, data.x_train, data.y_train)
    rec.update(
        diverged=False,
        test_loss=float(((w - w_star) ** 2).sum()),  # ||v⊙v − w*||², exact
        test_mse=result.metrics["test_loss"],  # the product's, on 1,000 test examples
        train_mse=result.metrics["train_loss"],
        trace_hessian=trace,
        trace_hessian_closed_form=trace_closed,
        l1_norm=float(w.sum()),  # ||w||_1 = ||v||²
        support_size=int((w > 0.1).sum()),  # coordinates with w_j > 0.1
        off_support_mass=float(w[SUPPORT:].sum()),
        seconds=time.perf_counter() - began,
    )
    return rec


def _value(rec: dict, key: str) -> float:
    return math.inf if rec.get("diverged") else rec[key]


def summarise(records: list[dict]) -> dict:
    out = {"runs": len(records), "diverged": sum(bool(r.get("diverged")) for r in records)}
    for key in ("test_loss", "test_mse", "train_mse", "trace_hessian", "l1_norm", "support_size"):
        vals = [_value(r, key) for r in records]
        out[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
    return out


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # diverged; strict JSON has no Infinity
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


# ---------------------------------------------------------------- widening valley


class WideningValley(torch.nn.Module):
    """L(u, v) = ½·v²·‖u‖²; forward() returns the loss."""

    def __init__(self, dim: int):
        super().__init__()
        self.u = torch.nn.Parameter(torch.ones(dim, dtype=torch.float64))
        self.v = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        return 0.5 * self.v.square().sum() * self.u.square().sum()


def run_toy(method: str, seed: int, *, steps: int, stop_step: int) -> dict:
    model = WideningValley(TOY_DIM)
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=TOY_LR)
    noise = None if method == "gd" else NoiseInjection(params, kind=method, sigma=TOY_SIGMA,
                                                       stop_step=stop_step, seed=seed)
    for t in range(1, steps + 1):  # the trainer's order: perturb, forward/backward, restore, step, after_step
        if noise is not None:
            noise.perturb(t)
        loss = model()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if noise is not None:
            noise.restore()
        optimizer.step()
        if noise is not None:
            noise.after_step(t)
    u2 = float(model.u.detach().square().sum())
    v2 = float(model.v.detach().square().sum())
    flat = torch.cat([model.u.detach(), model.v.detach()])

    def loss_of(z):
        return 0.5 * z[TOY_DIM:].square().sum() * z[:TOY_DIM].square().sum()

    trace_autograd = float(torch.trace(torch.autograd.functional.hessian(loss_of, flat)))
    finite = math.isfinite(u2) and math.isfinite(v2)
    return {"method": method, "seed": seed, "u_norm2": u2 if finite else math.inf,
            "v2": v2 if finite else math.inf, "loss": float(loss_of(flat)) if finite else math.inf,
            "trace_hessian": v2 * TOY_DIM + u2 if finite else math.inf,
            "trace_hessian_autograd": trace_autograd if finite else math.inf, "diverged": not finite}


# ---------------------------------------------------------------- main


def _fmt(x: float, width: int = 9) -> str:
    if not math.isfinite(x):
        return f"{'diverged':>{width}s}"
    if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e4):
        return f"{x:{width}.2e}"
    return f"{x:{width}.3g}" if abs(x) < 10 else f"{x:{width}.1f}"


def _ratios(comparisons: list[dict], key: str) -> str:
    return ", ".join("σ={:g}: ×{:.3g}".format(c["sigma"], c[key]) for c in comparisons)


def _range(stat: dict) -> str:
    return f"{_fmt(stat['median'])} [{_fmt(stat['min'], 8).strip()}, {_fmt(stat['max'], 8).strip()}]"


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds or (2 if args.quick else 10)))
    steps = args.steps or (1_200 if args.quick else STEPS)
    stop_step = args.stop_step or (900 if args.quick else STOP_STEP)
    toy_seeds = list(range(args.toy_seeds or (2 if args.quick else 5)))
    toy_steps, toy_stop = (300, 240) if args.quick else (TOY_STEPS, TOY_STOP)
    pgd_sigmas = [float(s) for s in args.pgd_sigmas.split(",") if s]
    anti_sigmas = [float(s) for s in args.anti_sigmas.split(",") if s]
    methods = [("gd", 0.0)] + [("pgd", s) for s in pgd_sigmas] + [("anti_pgd", s) for s in anti_sigmas]
    out = common.Path(args.out)

    settings = {
        "quick": args.quick, "seeds": seeds, "data": {"dim": DIM, "support": SUPPORT, "examples": EXAMPLES,
                                                      "test_examples": TEST_EXAMPLES, "data_seed": "= run seed"},
        "init_scale": args.init_scale, "lr": args.lr, "lr_on_reference_scale": args.lr / REF_SCALE,
        "steps": steps, "batch_size": EXAMPLES, "optimizer": "sgd (full batch: GD)",
        "noise_stop_step": stop_step, "noise_distribution": "gaussian",
        "pgd_sigmas": pgd_sigmas, "anti_pgd_sigmas": anti_sigmas, "expect_anti_sigmas": list(EXPECT_ANTI_SIGMAS),
        "loss": "product MSE = mean_i (y_i - f(x_i))^2; HaoChen et al.'s reference loss is 0.25*(y - f)^2, "
                "so every loss, gradient and Hessian here is 4x theirs (reference-scale value = 0.25 x ours)",
        "test_loss": "||v*v - w*||^2 exact from the weights (= E_x of the product's test MSE)",
        "trace_hessian": "Tr of the autograd Hessian (float64) of the product's training MSE w.r.t. v "
                         "at the final clean weights",
        "toy": {"loss": "0.5 * v^2 * ||u||^2", "dim": TOY_DIM, "init": "u = 1, v = 1", "lr": TOY_LR,
                "sigma": TOY_SIGMA, "steps": toy_steps, "noise_stop_step": toy_stop, "seeds": toy_seeds},
        "threads": torch.get_num_threads(),
    }
    payload = {"benchmark": "anti_pgd", "machine": common.machine(), "settings": settings, "runs": [],
               "toy_runs": []}

    print(f"Anti-PGD on quadratically parametrised regression (d={DIM}, n={EXAMPLES}, support {SUPPORT}): "
          f"α={args.init_scale:g}, η={args.lr:g} (≙ {args.lr / REF_SCALE:g} on the 0.25·(y−f)² scale), "
          f"{steps} full-batch steps, noise off from step {stop_step}, {len(seeds)} seeds, "
          f"torch threads {torch.get_num_threads()}" + ("  [--quick: harness check, not a result]" if args.quick else ""))
    print("loss scale: product MSE mean (y−f)²; test = ||v⊙v − w*||²; Tr H of the training MSE "
          "(divide both by 4 for HaoChen's 0.25·(y−f)² scale)")
    header = (f"{'method':9s} {'σ':>5s} {'test ||w−w*||² med [min, max]':>34s} {'test MSE':>9s} "
              f"{'train MSE':>9s} {'Tr H med [min, max]':>34s} {'||w||₁':>7s} {'#w>.1':>5s} {'s/run':>5s}")
    print(header)
    print("-" * len(header))
    began = time.perf_counter()
    summaries = []
    for method, sigma in methods:
        recs = []
        for seed in seeds:
            recs.append(run_regression(method, sigma, seed, steps=steps, stop_step=stop_step, lr=args.lr,
                                       init_scale=args.init_scale))
            payload["runs"].append(recs[-1])
            common.write_json(out, _json_safe(payload), final=False)
        s = summarise(recs)
        s.update(method=method, sigma=sigma)
        summaries.append(s)
        secs = statistics.mean(r["seconds"] for r in recs)
        print(f"{method:9s} {sigma if method != 'gd' else 0:5g} {_range(s['test_loss']):>34s} "
              f"{_fmt(s['test_mse']['median'])} {_fmt(s['train_mse']['median'])} "
              f"{_range(s['trace_hessian']):>34s} {_fmt(s['l1_norm']['median'], 7)} "
              f"{s['support_size']['median']:5g} {secs:5.1f}"
              + (f"  ({s['diverged']} diverged)" if s["diverged"] else ""), flush=True)
    print("-" * len(header))
    regression_seconds = time.perf_counter() - began

    hess_gap = max((abs(r["trace_hessian"] - r["trace_hessian_closed_form"]) / max(abs(r["trace_hessian"]), 1e-12)
                    for r in payload["runs"] if not r.get("diverged")), default=0.0)

    # -------------------------------------------------------- verdicts on medians
    by = {(s["method"], s["sigma"]): s for s in summaries}
    gd = by[("gd", 0.0)]
    gd_test, gd_trace = gd["test_loss"]["median"], gd["trace_hessian"]["median"]

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else math.inf

    comparisons = []
    for (method, sigma), s in by.items():
        if method == "gd":
            continue
        paired_better = sum(
            _value(r, "test_loss") < _value(g, "test_loss")
            for r in payload["runs"] if r["method"] == method and r["sigma"] == sigma
            for g in payload["runs"] if g["method"] == "gd" and g["seed"] == r["seed"])
        comparisons.append({
            "method": method, "sigma": sigma,
            "gd_over_method_test_loss": ratio(gd_test, s["test_loss"]["median"]),
            "gd_over_method_trace_hessian": ratio(gd_trace, s["trace_hessian"]["median"]),
            "seeds_with_lower_test_loss_than_gd": paired_better, "seeds": len(seeds)})
    tested_anti = [c for c in comparisons if c["method"] == "anti_pgd" and c["sigma"] in EXPECT_ANTI_SIGMAS]
    pgd_cmp = [c for c in comparisons if c["method"] == "pgd"]
    expectations = {
        "anti_pgd_10x_lower_test_loss": None if not tested_anti else all(
            c["gd_over_method_test_loss"] >= TEST_RATIO for c in tested_anti),
        "anti_pgd_3x_lower_trace_hessian": None if not tested_anti else all(
            c["gd_over_method_trace_hessian"] >= TRACE_RATIO for c in tested_anti),
        "no_pgd_sigma_better_than_gd": None if not pgd_cmp else all(
            by[("pgd", c["sigma"])]["test_loss"]["median"] >= gd_test for c in pgd_cmp),
    }

    def verdict(v):
        return "n/a" if v is None else ("PASS" if v else "FAIL")

    print("ratios of medians, GD ÷ method (test loss, Tr H); seeds where the method's test loss < GD's (paired):")
    for c in comparisons:
        print(f"  {c['method']:9s} σ={c['sigma']:<5g} test ×{c['gd_over_method_test_loss']:.3g}   "
              f"Tr H ×{c['gd_over_method_trace_hessian']:.3g}   lower than GD in "
              f"{c['seeds_with_lower_test_loss_than_gd']}/{c['seeds']} seeds")
    sig_txt = ", ".join(f"{s:g}" for s in EXPECT_ANTI_SIGMAS)
    print(f"{verdict(expectations['anti_pgd_10x_lower_test_loss'])}  Anti-PGD (σ ∈ {{{sig_txt}}}) median test loss "
          f"≥ {TEST_RATIO:g}× lower than GD's "
          f"({_ratios(tested_anti, 'gd_over_method_test_loss')})")
    print(f"{verdict(expectations['anti_pgd_3x_lower_trace_hessian'])}  Anti-PGD (σ ∈ {{{sig_txt}}}) median Tr H "
          f"≥ {TRACE_RATIO:g}× lower than GD's "
          f"({_ratios(tested_anti, 'gd_over_method_trace_hessian')})")
    print(f"{verdict(expectations['no_pgd_sigma_better_than_gd'])}  no PGD σ has a lower median test loss than GD "
          f"(GD {_fmt(gd_test).strip()}; " + ", ".join(
              f"σ={c['sigma']:g}: {_fmt(by[('pgd', c['sigma'])]['test_loss']['median']).strip()}" for c in pgd_cmp) + ")")
    print(f"on HaoChen's 0.25·(y−f)² scale: GD test {REF_SCALE * gd_test:.3g}, Tr H {REF_SCALE * gd_trace:.3g} "
          f"(notes: 18.5 / 132); " + "; ".join(
              f"Anti-PGD σ={c['sigma']:g} test {REF_SCALE * by[('anti_pgd', c['sigma'])]['test_loss']['median']:.3g}, "
              f"Tr H {REF_SCALE * by[('anti_pgd', c['sigma'])]['trace_hessian']['median']:.3g}"
              for c in comparisons if c["method"] == "anti_pgd")
          + " (notes: σ=0.05 0.65 / 28, σ=0.1 0.004 / 12.5)")
    print(f"Tr H autograd vs closed form: max relative gap {hess_gap:.1e}")

    # -------------------------------------------------------- widening valley
    print()
    print(f"Widening valley L = ½·v²·‖u‖², u ∈ R^{TOY_DIM}, from u = 1, v = 1: lr {TOY_LR:g}, σ = {TOY_SIGMA:g}, "
          f"{toy_steps} steps, noise off from step {toy_stop}, {len(toy_seeds)} seeds")
    toy_header = f"{'method':9s} {'‖u‖² med [min, max]':>34s} {'v² median':>9s} {'Tr ∇²L = v²d+‖u‖² med':>22s}"
    print(toy_header)
    print("-" * len(toy_header))
    toy_began = time.perf_counter()
    toy_summary = {}
    for method in ("gd", "pgd", "anti_pgd"):
        recs = [run_toy(method, seed, steps=toy_steps, stop_step=toy_stop) for seed in (toy_seeds if method != "gd" else [0])]
        payload["toy_runs"].extend(recs)
        u = [r["u_norm2"] for r in recs]
        summ = {"u_norm2": {"median": statistics.median(u), "min": min(u), "max": max(u)},
                "v2_median": statistics.median(r["v2"] for r in recs),
                "trace_hessian_median": statistics.median(r["trace_hessian"] for r in recs),
                "diverged": sum(r["diverged"] for r in recs)}
        toy_summary[method] = summ
        print(f"{method:9s} {_range(summ['u_norm2']):>34s} {_fmt(summ['v2_median'])} "
              f"{_fmt(summ['trace_hessian_median'], 22)}" + (f"  ({summ['diverged']} diverged)" if summ["diverged"] else ""))
    print("-" * len(toy_header))
    toy_gd = toy_summary["gd"]["u_norm2"]["median"]
    toy_ok = {
        "anti_pgd_u_norm2_below_0.1x_gd": toy_summary["anti_pgd"]["u_norm2"]["median"] <= 0.1 * toy_gd,
        "pgd_u_norm2_above_gd": toy_summary["pgd"]["u_norm2"]["median"] > toy_gd,
    }
    print(f"{verdict(toy_ok['anti_pgd_u_norm2_below_0.1x_gd'])}  toy: Anti-PGD median ‖u‖² "
          f"{_fmt(toy_summary['anti_pgd']['u_norm2']['median']).strip()} ≤ 0.1 × GD's {_fmt(toy_gd).strip()} (flat region)")
    print(f"{verdict(toy_ok['pgd_u_norm2_above_gd'])}  toy: PGD median ‖u‖² "
          f"{_fmt(toy_summary['pgd']['u_norm2']['median']).strip()} > GD's {_fmt(toy_gd).strip()} (drifts to sharp)")

    total = time.perf_counter() - began
    payload["summary"] = {
        "regression": summaries, "comparisons": comparisons, "expectations": expectations,
        "reference_scale": {"gd_test_loss": REF_SCALE * gd_test, "gd_trace_hessian": REF_SCALE * gd_trace,
                            "anti_pgd": {f"{c['sigma']:g}": {
                                "test_loss": REF_SCALE * by[("anti_pgd", c["sigma"])]["test_loss"]["median"],
                                "trace_hessian": REF_SCALE * by[("anti_pgd", c["sigma"])]["trace_hessian"]["median"]}
                                for c in comparisons if c["method"] == "anti_pgd"}},
        "trace_hessian_max_relative_gap_autograd_vs_closed_form": hess_gap,
        "toy": toy_summary, "toy_expectations": toy_ok,
        "regression_wall_seconds": regression_seconds, "toy_wall_seconds": time.perf_counter() - toy_began,
        "total_wall_seconds": total,
    }
    common.write_json(out, _json_safe(payload))
    print(f"total wall time {total:.0f} s; results in {out}")
    failed = [k for k, v in {**expectations, **toy_ok}.items() if v is False]
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
