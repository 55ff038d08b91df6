"""Self-modeling lowers the LLC? A paired-seed reproduction on scikit-learn's 8x8 digits (not run by make test).

    OMP_NUM_THREADS=1 .venv/bin/python bench/self_modeling.py            # 8 seeds, the demo's audit settings
    OMP_NUM_THREADS=1 .venv/bin/python bench/self_modeling.py --quick    # harness check: 2 seeds, short runs

Science notes §4 (Premakumar et al. 2024, arXiv 2407.10188): an MLP 64→256→10 on digits trained with
self-modeling at hidden layer 1 (weight AW = 50) should end with a lower LLC of its TASK loss than the same
network trained without it, at almost the same accuracy. A regulariser that merely shrinks the hidden
activations could do the same, so a third arm trains with an activation-L2 penalty at the same site whose
weight is matched on training loss.

Per seed s, every arm shares: the train/test split (`datasets.split(x, y, 0.2, seed=s)`), the initial weights
of the shared layers (layers.0, and the 10 task rows of layers.1: the self-model arm's extra 256 output rows
keep their own seeded init), the minibatch order (the trainer's generator seeded with s) and the sampler seed.
Training: the trainer core (`lambdascope.training.loop.train`), SGD lr 0.05 momentum 0.9, batch 64, 50
epochs (as `make run`). Arms:

- baseline: cross-entropy only;
- self_model: + AW · MSE(self-model outputs, hidden.1 activations detached), AW = 50;
- l2_objective / l2_task: + c · mean(hidden.1²) (PENALTY_KIND_L2 at site "hidden.1"), the activation-L2
  control. c is chosen ONCE, before the paired runs, from a grid of weights trained on the matching seeds (the
  first 4): l2_task's c makes the mean log final TRAINING TASK loss equal the self-model arm's (the issue's
  rule); l2_objective's c makes the mean log final training OBJECTIVE (task + penalty) equal the self-model
  arm's task + AW·MSE. Where the self-model arm ends at or below the baseline's task loss, no L2 weight > 0
  matches it: the task-matched control is then the baseline itself (c = 0) and is not run, and l2_objective
  is the informative control. `--l2-weight C` skips the matching and runs one control with weight C.

Audit: the estimator core (`lambdascope.llc.audit.run_audit`: `estimate_llc` + diagnostics + verdict) on
the TASK network (`task_architecture` + `task_state_dict`: the self-model rows removed), cross-entropy on the
training split, nβ = n / log n, with `make run`'s settings: automatic step calibration, 4 chains × (1000
burn-in + 600 draws), γ = 10, batch 256 (SGLDConfig defaults), sampler seed = s. Writes
bench/results/self_modeling.json. Acceptance (the issue): λ̂(self-model) < λ̂(baseline) in at least 7 of 8
seeds, by about 5-10% (median), accuracy within 1 point.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import common  # sets sys.path for services (and dln)
import torch
import torch.nn.functional as F

from lambdascope import modules
from lambdascope.v1 import models_pb2
from lambdascope.llc.audit import AuditSettings, run_audit
from lambdascope.llc.llc import SGLDConfig, default_nbeta
from lambdascope.training import datasets
from lambdascope.training.loop import TrainConfig, train
from lambdascope.training.penalties import CompiledPenalty
from services.trainer.translate import self_modeling_architecture, task_architecture, task_state_dict

WIDTHS = [64, 256, 10]
CLASSES = WIDTHS[-1]
SITE = "hidden.1"
MATCHING_SEEDS = 4
TARGET_SEEDS_FRACTION = 7 / 8  # λ̂ lower in at least 7 of 8 seeds
TARGET_MEDIAN_REDUCTION = 0.05  # "by about 5-10%": a median reduction of at least 5% ...
EXPECTED_BAND = (0.05, 0.10)  # ... and, reported beside PASS/FAIL, whether it falls inside the notes' 5-10%
TARGET_ACCURACY_POINTS = 1.0  # mean test-accuracy loss of at most 1 point


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=None, help="paired seeds 0..N-1 (default 8; --quick 2)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 50; --quick 20)")
    p.add_argument("--self-model-weight", type=float, default=50.0, help="AW (default 50)")
    p.add_argument("--l2-weight", type=float, default=None,
                   help="run one activation-L2 control with this weight instead of matching it")
    p.add_argument("--chains", type=int, default=None, help="SGLD chains (default 4; --quick 2)")
    p.add_argument("--burnin", type=int, default=None, help="SGLD burn-in steps (default 1000; --quick 200)")
    p.add_argument("--draws", type=int, default=None, help="SGLD draws per chain (default 600; --quick 200)")
    p.add_argument("--localization", type=float, default=10.0,
                   help="γ, one for every audit so the pairs compare at one γ (default 10, the figures in "
                        "docs/results.md; the estimator's own default sets γ per model from its curvature)")
    common.add_run_flags(p, "self_modeling.json", quick="2 seeds, 20 epochs, short chains",
                         check="the acceptance criteria are missed")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------ training


def architectures_for() -> tuple[models_pb2.Architecture, models_pb2.Architecture]:
    base = models_pb2.Architecture(mlp=models_pb2.MLPArchitecture(widths=WIDTHS))
    return base, self_modeling_architecture(base, 1)


def initial_module(arm: str, seed: int) -> tuple[torch.nn.Module, models_pb2.Architecture]:
    """The arm's freshly initialised module; the shared layers are the baseline's init for this seed."""
    base, widened = architectures_for()
    reference = modules.build_module(base, seed=seed)
    if arm != "self_model":
        return reference, base
    module = modules.build_module(widened, seed=seed)
    with torch.no_grad():
        ref = dict(reference.named_parameters())
        for name, param in module.named_parameters():
            param[: ref[name].shape[0]].copy_(ref[name])  # layers.0 whole; layers.1 its 10 task rows
    return module, widened


def train_config(arm: str, seed: int, epochs: int, sm_weight: float, control_weight: float) -> TrainConfig:
    extra = {}
    if arm == "self_model":
        extra = dict(self_model_site=SITE, self_model_weight=sm_weight)
    elif arm.startswith("l2"):
        extra = dict(penalties=(CompiledPenalty(SITE, "l2", control_weight),))
    return TrainConfig(batch_size=64, lr=0.05, optimizer="sgd", momentum=0.9, loss="cross_entropy",
                       task_outputs=CLASSES, epochs=epochs, seed=seed, **extra)


def train_arm(arm: str, seed: int, data: datasets.TrainingData, epochs: int, sm_weight: float,
              control_weight: float) -> tuple[torch.nn.Module, dict]:
    """Train one arm; returns the TASK network at the final weights (eval mode) and its record."""
    module, arch = initial_module(arm, seed)
    config = train_config(arm, seed, epochs, sm_weight, control_weight)
    began = time.perf_counter()
    result = train(module, data.x_train, data.y_train, data.x_test, data.y_test, config)
    seconds = time.perf_counter() - began
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    task_arch = task_architecture(arch, CLASSES)
    task = modules.build_module(task_arch)
    modules.load_weights(task, task_state_dict(state, arch, CLASSES))
    task.eval()
    m = result.metrics
    record = {
        "train_loss": m["train_loss"], "test_loss": m["test_loss"],
        "train_accuracy": m["train_accuracy"], "test_accuracy": m["test_accuracy"],
        "train_seconds": seconds, "steps": result.steps,
        "trained_parameters": sum(p.numel() for p in module.parameters()),
        "task_parameters": sum(p.numel() for p in task.parameters()),
    }
    for key in ("train_self_model_loss", "test_self_model_loss", "train_penalty"):
        if key in m:
            record[key] = m[key]
    return task, record


GRID = (0.0, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)  # activation-L2 weights tried (0 = the baseline)


def crossing(grid: list[float], values: list[float], target: float) -> float | None:
    """The weight where the piecewise-linear curve (linear in log c, in c on the first segment from 0) first
    reaches `target`; None when it never does (then the nearest end is reported by the caller)."""
    for (c0, v0), (c1, v1) in zip(zip(grid, values), zip(grid[1:], values[1:])):
        if (v0 - target) * (v1 - target) <= 0 and v0 != v1:
            t = (target - v0) / (v1 - v0)
            return c0 + t * (c1 - c0) if c0 == 0 else math.exp(math.log(c0) + t * (math.log(c1) - math.log(c0)))
    return None


def match_control_weights(x, y, seeds: list[int], epochs: int, sm_weight: float) -> dict:
    """Pick the two activation-L2 weights once, from the matching seeds' training runs.

    For each weight c of GRID the control is trained on every matching seed; its curves are the mean over
    those seeds of log(final training task loss) and of log(final training objective = task loss + c·mean
    h²). The task-loss-matched weight is where the first curve reaches the self-model arm's mean log task
    loss (the issue's rule); the objective-matched weight is where the second reaches the self-model arm's
    mean log(task loss + AW·MSE). Linear interpolation in log c between grid points."""
    runs = {}
    for seed in seeds:
        data = datasets.split(x, y, 0.2, seed=seed)
        for c in GRID:
            kind = "baseline" if c == 0 else "l2"
            runs[(seed, c)] = train_arm(kind, seed, data, epochs, sm_weight, c)[1]
        runs[(seed, "sm")] = train_arm("self_model", seed, data, epochs, sm_weight, 0.0)[1]

    def mean_log(values):
        return statistics.fmean(math.log(v) for v in values)

    task_curve = [mean_log(runs[(s, c)]["train_loss"] for s in seeds) for c in GRID]
    obj_curve = [mean_log(runs[(s, c)]["train_loss"] + runs[(s, c)].get("train_penalty", 0.0) for s in seeds)
                 for c in GRID]
    task_target = mean_log(runs[(s, "sm")]["train_loss"] for s in seeds)
    obj_target = mean_log(runs[(s, "sm")]["train_loss"] + sm_weight * runs[(s, "sm")]["train_self_model_loss"]
                          for s in seeds)
    print(f"matching the activation-L2 control on seeds {seeds} (mean over seeds of the final training values):")
    print(f"    {'c':>8s} {'task CE':>9s} {'objective':>9s} {'test acc':>8s}")
    for c, tv, ov in zip(GRID, task_curve, obj_curve):
        acc = statistics.fmean(runs[(s, c)]["test_accuracy"] for s in seeds)
        print(f"    {c:8.3g} {math.exp(tv):9.5f} {math.exp(ov):9.5f} {100 * acc:7.2f}%" + ("  (baseline)" if c == 0 else ""))
    acc = statistics.fmean(runs[(s, "sm")]["test_accuracy"] for s in seeds)
    print(f"    {'self-model':>8s} {math.exp(task_target):9.5f} {math.exp(obj_target):9.5f} {100 * acc:7.2f}%  (targets)")
    task_c = crossing(list(GRID), task_curve, task_target)
    obj_c = crossing(list(GRID), obj_curve, obj_target)
    notes = []
    if task_c is None:
        task_c = 0.0 if task_target < task_curve[0] else GRID[-1]
        notes.append("task-loss target outside the grid's range: " + (
            "the self-model arm's training task loss is at or below the baseline's, which no L2 weight > 0 lowers "
            "on average: the task-loss-matched control is the baseline itself (c = 0) and is not run again"
            if task_c == 0.0 else f"c capped at {GRID[-1]}"))
    if obj_c is None:
        obj_c = GRID[-1]
        notes.append(f"objective target beyond the grid: c capped at {GRID[-1]}")
    for note in notes:
        print(f"    note: {note}")
    return {
        "rule": "weights chosen once, before the paired runs, on the matching seeds: a grid of L2 weights, each "
                "trained on every matching seed; mean over seeds of log(final training task loss) [l2_task] and of "
                "log(final training objective = task + c·mean(hidden.1²)) [l2_objective] matched to the self-model "
                "arm's mean log(task loss) and mean log(task loss + AW·MSE) by linear interpolation in log c",
        "matching_seeds": seeds, "grid": list(GRID),
        "task_curve_mean_train_loss": [math.exp(v) for v in task_curve],
        "objective_curve_mean": [math.exp(v) for v in obj_curve],
        "task_target": math.exp(task_target), "objective_target": math.exp(obj_target),
        "l2_task_weight": task_c, "l2_objective_weight": obj_c, "notes": notes,
        "runs": [{"seed": k[0], "weight": k[1], **{m: v for m, v in r.items() if isinstance(v, float)}}
                 for k, r in runs.items()],
    }


# ------------------------------------------------------------------------------------------ audit


def audit(task: torch.nn.Module, data: datasets.TrainingData, sgld: SGLDConfig) -> dict:
    began = time.perf_counter()
    result = run_audit(task, data.x_train, data.y_train, F.cross_entropy, AuditSettings(sgld=sgld), device="cpu")
    llc, diag = result.llc, result.diagnostics
    calib = llc.calibration
    return {
        "llc": llc.mean, "llc_std": llc.std, "per_chain": llc.per_chain, "init_loss": llc.init_loss,
        "nbeta": llc.nbeta, "num_parameters": llc.num_parameters, "step_size": llc.step_size,
        "calibration_summary": calib.summary if calib is not None else None,
        "acceptance": llc.acceptance, "bias_estimate": llc.bias_estimate,
        "rhat": diag.rhat, "ess": diag.ess, "mcse_relative": diag.mcse_relative,
        "below_init_fraction": diag.below_init_fraction,
        "verdict": result.verdict.state, "verdict_reasons": list(result.verdict.reasons),
        "segment_llc": common.segment_llcs(llc.traces[:], llc.init_loss, llc.nbeta) if llc.traces else [],
        "audit_seconds": time.perf_counter() - began,
    }


# ------------------------------------------------------------------------------------------ summary


def compare(seeds: list[dict], a: str, b: str) -> dict:
    rel = [s[a]["llc"] / s[b]["llc"] - 1.0 for s in seeds]
    acc = [100 * (s[a]["test_accuracy"] - s[b]["test_accuracy"]) for s in seeds]
    loss = [s[a]["train_loss"] / s[b]["train_loss"] for s in seeds]
    return {
        "a": a, "b": b, "seeds": len(seeds),
        "llc_lower_in": sum(s[a]["llc"] < s[b]["llc"] for s in seeds),
        "median_rel_change": statistics.median(rel), "mean_rel_change": statistics.fmean(rel),
        "min_rel_change": min(rel), "max_rel_change": max(rel), "rel_change": rel,
        "mean_accuracy_diff_points": statistics.fmean(acc), "min_accuracy_diff_points": min(acc),
        "max_accuracy_diff_points": max(acc), "median_train_loss_ratio": statistics.median(loss),
    }


def fmt_pct(v: float) -> str:
    return f"{100 * v:+.1f}%"


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    n_seeds = args.seeds or (2 if args.quick else 8)
    epochs = args.epochs or (20 if args.quick else 50)
    sgld = SGLDConfig(chains=args.chains or (2 if args.quick else 4), burnin=args.burnin or (200 if args.quick else 1000),
                      draws=args.draws or (200 if args.quick else 600), seed=0, localization=args.localization)
    x, y = datasets.load_digits_dataset()
    n_train = len(datasets.split(x, y, 0.2, seed=0).x_train)
    settings = {
        "data": "sklearn digits, x/16, test_fraction 0.2 (datasets.split seeded per seed)", "n_train": n_train,
        "widths": WIDTHS, "epochs": epochs, "optimizer": "sgd lr 0.05 momentum 0.9", "batch_size": 64,
        "self_model_site": SITE, "self_model_weight": args.self_model_weight, "seeds": list(range(n_seeds)),
        "sampler": {**common.config_dict(sgld), "step_size": "calibrated", "seed": "= training seed",
                    "nbeta": default_nbeta(n_train), "nbeta_rule": "n / log n"},
        "audited_network": "task network: task_architecture + task_state_dict (self-model rows removed)",
        "threads": torch.get_num_threads(),
    }
    out = common.Path(args.out)
    payload = {"benchmark": "self_modeling", "machine": common.machine(), "settings": settings}
    print(f"self-modeling on digits: MLP {'→'.join(map(str, WIDTHS))}, {epochs} epochs, AW={args.self_model_weight:g} at "
          f"{SITE}, {n_seeds} paired seeds; audit: {sgld.chains} chains × ({sgld.burnin} burn-in + {sgld.draws} draws), "
          f"ε calibrated, γ={sgld.localization:g}, batch {sgld.batch_size}, nβ=n/log n={default_nbeta(n_train):.1f} "
          f"(n={n_train}), torch threads {torch.get_num_threads()}", flush=True)
    began = time.perf_counter()

    # ---- the control weights, once, before the paired runs
    if args.l2_weight is None:
        matching = match_control_weights(x, y, list(range(min(MATCHING_SEEDS, n_seeds))), epochs,
                                         args.self_model_weight)
        matching["seconds"] = time.perf_counter() - began
        l2 = {"l2_objective": matching["l2_objective_weight"], "l2_task": matching["l2_task_weight"]}
        print(f"  → l2_objective c = {l2['l2_objective']:.4g}, l2_task c = {l2['l2_task']:.4g} "
              f"({matching['seconds']:.0f} s)", flush=True)
    else:
        matching = {"rule": "given on the command line (--l2-weight)", "l2_weight": args.l2_weight}
        l2 = {"l2": args.l2_weight}
    arms = ["baseline", "self_model"] + [arm for arm, c in l2.items() if c > 0]
    controls = [arm for arm in arms if arm.startswith("l2")]
    payload["control_matching"] = matching
    settings["l2_weights"] = l2
    settings["arms"] = arms
    common.write_json(out, payload, final=False)

    # ---- paired seeds
    header = (f"{'seed':>4s} {'arm':<12s} {'train CE':>9s} {'test CE':>8s} {'test acc':>8s} {'λ̂ ± std':>14s} "
              f"{'vs base':>8s} {'ε':>8s} {'R-hat':>6s} {'ESS':>5s} {'accept':>6s} {'verdict':<8s} {'s':>4s}")
    print(header)
    print("-" * len(header))
    payload["seeds"] = []
    for seed in range(n_seeds):
        data = datasets.split(x, y, 0.2, seed=seed)
        config = SGLDConfig(**{**common.config_dict(sgld), "seed": seed})
        row = {"seed": seed}
        for arm in arms:
            task, rec = train_arm(arm, seed, data, epochs, args.self_model_weight, l2.get(arm, 0.0))
            rec.update(audit(task, data, config))
            row[arm] = rec
            vs = "" if arm == "baseline" else fmt_pct(rec["llc"] / row["baseline"]["llc"] - 1)
            print(f"{seed:4d} {arm:<12s} {rec['train_loss']:9.5f} {rec['test_loss']:8.4f} "
                  f"{100 * rec['test_accuracy']:7.2f}% {rec['llc']:7.2f} ± {rec['llc_std']:<5.2f} {vs:>8s} "
                  f"{rec['step_size']:8.2e} {rec['rhat']:6.3f} {rec['ess']:5.0f} {rec['acceptance']:6.3f} "
                  f"{rec['verdict']:<8s} {rec['train_seconds'] + rec['audit_seconds']:4.0f}", flush=True)
        payload["seeds"].append(row)
        common.write_json(out, payload, final=False)
    total = time.perf_counter() - began

    # ---- summary
    seeds = payload["seeds"]
    pairs = [("self_model", "baseline")] + [(c, "baseline") for c in controls] + [("self_model", c) for c in controls]
    comparisons = {f"{a}_vs_{b}": compare(seeds, a, b) for a, b in pairs}
    sm = comparisons["self_model_vs_baseline"]
    need = math.ceil(TARGET_SEEDS_FRACTION * len(seeds))
    criteria = {
        f"λ̂ lower in ≥ {need} of {len(seeds)} seeds": sm["llc_lower_in"] >= need,
        f"median reduction ≥ {100 * TARGET_MEDIAN_REDUCTION:.0f}%":
            -sm["median_rel_change"] >= TARGET_MEDIAN_REDUCTION,
        f"mean accuracy loss ≤ {TARGET_ACCURACY_POINTS:g} point": -sm["mean_accuracy_diff_points"] <= TARGET_ACCURACY_POINTS,
    }
    passed = all(criteria.values())
    reduction = -sm["median_rel_change"]
    in_band = EXPECTED_BAND[0] <= reduction <= EXPECTED_BAND[1]
    size_note = ("inside" if in_band else ("larger than" if reduction > EXPECTED_BAND[1] else "smaller than")) + \
        f" the notes' {100 * EXPECTED_BAND[0]:.0f}-{100 * EXPECTED_BAND[1]:.0f}%"
    per_arm = {arm: {"mean_llc": statistics.fmean(s[arm]["llc"] for s in seeds),
                     "mean_train_loss": statistics.fmean(s[arm]["train_loss"] for s in seeds),
                     "mean_test_loss": statistics.fmean(s[arm]["test_loss"] for s in seeds),
                     "mean_test_accuracy": statistics.fmean(s[arm]["test_accuracy"] for s in seeds),
                     "median_rhat": statistics.median(s[arm]["rhat"] for s in seeds),
                     "max_rhat": max(s[arm]["rhat"] for s in seeds),
                     "median_ess": statistics.median(s[arm]["ess"] for s in seeds),
                     "min_ess": min(s[arm]["ess"] for s in seeds),
                     "median_acceptance": statistics.median(s[arm]["acceptance"] for s in seeds),
                     "median_step_size": statistics.median(s[arm]["step_size"] for s in seeds),
                     "verdicts": {v: sum(s[arm]["verdict"] == v for s in seeds) for v in ("ok", "warning", "failed")}}
               for arm in arms}
    payload["summary"] = {"total_wall_seconds": total, "comparisons": comparisons, "per_arm": per_arm,
                          "criteria": criteria, "passed": passed,
                          "median_reduction_in_expected_band": in_band, "size_note": size_note, "quick": args.quick}
    common.write_json(out, payload)

    print("-" * len(header))
    print(f"{'arm':<12s} {'mean λ̂':>8s} {'train CE':>9s} {'test CE':>8s} {'test acc':>8s} {'med R-hat':>9s} "
          f"{'med ESS':>7s} {'med ε':>8s}  verdicts ok/warning/failed")
    for arm in arms:
        d = per_arm[arm]
        print(f"{arm:<12s} {d['mean_llc']:8.2f} {d['mean_train_loss']:9.5f} {d['mean_test_loss']:8.4f} "
              f"{100 * d['mean_test_accuracy']:7.2f}% {d['median_rhat']:9.3f} {d['median_ess']:7.0f} "
              f"{d['median_step_size']:8.2e}  {d['verdicts']['ok']}/{d['verdicts']['warning']}/{d['verdicts']['failed']}")
    print()
    for c in comparisons.values():
        print(f"{c['a']:>12s} vs {c['b']:<12s}: λ̂ lower in {c['llc_lower_in']}/{c['seeds']}, median "
              f"{fmt_pct(c['median_rel_change'])} (range {fmt_pct(c['min_rel_change'])} … {fmt_pct(c['max_rel_change'])}), "
              f"test acc {c['mean_accuracy_diff_points']:+.2f} pts (range {c['min_accuracy_diff_points']:+.2f} … "
              f"{c['max_accuracy_diff_points']:+.2f}), train CE ratio {c['median_train_loss_ratio']:.2f}")
    print()
    for name, ok in criteria.items():
        print(f"  {'ok  ' if ok else 'MISS'} {name}")
    print(f"{'PASS' if passed else 'FAIL'}: self-modeling (AW={args.self_model_weight:g}) vs baseline — "
          f"λ̂ lower in {sm['llc_lower_in']}/{sm['seeds']} seeds, median {fmt_pct(sm['median_rel_change'])}, "
          f"test accuracy {sm['mean_accuracy_diff_points']:+.2f} points; size: median reduction "
          f"{100 * reduction:.1f}% is {size_note}"
          + (" (--quick: a harness check, not the benchmark)" if args.quick else ""))
    print("activation-L2 weights: " + ", ".join(f"{k} c = {v:.4g}" for k, v in l2.items())
          + ("" if args.l2_weight is not None else f" (matched on seeds {matching['matching_seeds']})")
          + "".join(f"\n  note: {n}" for n in matching.get("notes", [])))
    print(f"total wall time {total:.0f} s; results in {out}")
    return 1 if args.check and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
