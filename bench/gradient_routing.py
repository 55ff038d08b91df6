"""Gradient routing (Cloud et al., arXiv 2410.04332) on the 8×8 digits autoencoder, through the
product's trainer core (not run by make test).

    OMP_NUM_THREADS=1 .venv/bin/python bench/gradient_routing.py           # full: 5 seeds
    OMP_NUM_THREADS=1 .venv/bin/python bench/gradient_routing.py --quick   # harness check

The MNIST latent-split experiment of the paper (§4.1; /work/shared/notes/science.md §4), rebuilt
from the product's own parts, the way a user would configure them, with nothing reimplemented:

- data: `lambdascope.training.datasets.load_digits_dataset` (1,797 images, 64 pixels in [0, 1]),
  `datasets.split(x, y, 0.2, seed)`: 1,438 training rows, 359 held out. The split is redrawn for
  every seed, so the spread over seeds covers the split as well as the initialisation;
- model: `lambdascope.modules.build_module` of an `AutoencoderArchitecture`, encoder widths
  64 → 256 → 128 → 32, ReLU, mirrored decoder; the 32-unit code is the site `latent`;
- objective: pixel MAE (`loss="mae"`, `reconstruct=True`) plus two `ActivationPenalty` messages at
  `latent`, PENALTY_KIND_L1 weight 0.096 and PENALTY_KIND_HALF_DECORRELATION weight 0.1, compiled
  by the trainer's `services.trainer.translate.compile_penalties`. The paper's L1 weight is 3e-3 on the per-example
  sum over the code's units (`encodings.abs().mean(dim=0).sum()` in its reference code); the
  product's L1 is the mean |a| over batch and units, so the same penalty is 3e-3 × 32 = 0.096.
  As in the reference, the penalties act on the raw code: routing masks only what flows on from
  the site (lambdascope/training/sites.py);
- routing: a `GradientRoutingSpec` with one `RoutingRule` at `latent`: labels 0–4 → units [0, 16),
  labels 5–9 → units [16, 32), compiled by `services.trainer.translate.compile_routing`. The unrouted
  control is the same config without the rule;
- training: `lambdascope.training.loop.train`, Adam lr 1e-3 (as in the paper), batch 64 (the
  product's default), 100 epochs (2,300 steps);
- evaluation: `lambdascope.training.certificates.certificate_errors` on the detached codes of the
  trained encoder. For each half a fresh decoder (the product's defaults: hidden 256, Adam 1e-3,
  200 epochs, batch 256, L1 loss) is trained on the training split over all digits. Its MAE is
  then measured on the held-out split, on its own group (group 0 = digits 0–4, owned by half
  [0, 16); group 1 = digits 5–9, owned by half [16, 32)) and on the foreign group. ratio =
  foreign / own. The autoencoder's own test reconstruction MAE (no routing at evaluation) is
  reported too.

Settings were fixed once and are the same for both arms and every seed. History, for honesty: the
first full run (L1 weight 3e-3 taken literally, penalties on the routed code) failed at a routed
ratio of 1.03; the two differences from the reference code above were then found and fixed, and
nothing else was changed. Nothing is tuned per
seed. The widths scale the paper's 784 → 2048 → 512 → 32 down to 64 inputs and keep
its 32-unit code, so the 16 + 16 split is unchanged. 100 epochs of batch 64 is 2,300 Adam steps:
enough for the reconstruction to get well below predicting the mean image (test MAE ~0.19), and short
enough that ten training runs plus twenty certificate decoders take about 3 minutes on one CPU
thread (173 s measured on the shared 2-vCPU box). The paper ran 200 epochs of batch 2,048 on
MNIST's 60,000 images, about 6,000 steps.

Checks (the issue's acceptance), on medians over seeds:
- routed: the median over seeds of min(ratio of half 0, ratio of half 1) is ≥ 1.8;
- unrouted: the median over seeds of each half's ratio lies within 0.8–1.25.
Prints PASS/FAIL for each, writes bench/results/gradient_routing.json (through a .tmp renamed at
the end). `--check` exits 1 when a check fails. `--l1-weight` / `--decorrelation-weight` change the
penalty weights for an exploratory run; the default run uses the weights above.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import common  # sets sys.path for services and lambdascope
import torch

from lambdascope import architectures, modules
from lambdascope.training import datasets
from lambdascope.training.certificates import certificate_errors
from lambdascope.training.loop import TrainConfig, train
from lambdascope.v1 import models_pb2, trainer_pb2
from services.trainer import translate

ROUTED_MIN_RATIO = 1.8
UNROUTED_RANGE = (0.8, 1.25)
LATENT = "latent"
HALVES = [(0, 16), (16, 32)]
GROUP_LABELS = ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 5; --quick 1)")
    p.add_argument("--epochs", type=int, default=None, help="autoencoder epochs (default 100; --quick 15)")
    p.add_argument("--cert-epochs", type=int, default=None,
                   help="certificate decoder epochs (default 200, the product's; --quick 60)")
    p.add_argument("--widths", default="64,256,128,32", help="encoder widths (default 64,256,128,32)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--l1-weight", type=float, default=0.096)
    p.add_argument("--decorrelation-weight", type=float, default=0.1)
    common.add_run_flags(p, "gradient_routing.json", quick="1 seed, 15 epochs, 60 certificate epochs",
                         check="a check fails")
    return p.parse_args(argv)


def architecture(widths: list[int]) -> models_pb2.Architecture:
    return models_pb2.Architecture(autoencoder=models_pb2.AutoencoderArchitecture(
        encoder_widths=widths, activation=models_pb2.ACTIVATION_RELU))


def penalty_specs(l1: float, decorrelation: float) -> list[trainer_pb2.ActivationPenalty]:
    return [
        trainer_pb2.ActivationPenalty(site=LATENT, kind=trainer_pb2.PENALTY_KIND_L1, weight=l1),
        trainer_pb2.ActivationPenalty(site=LATENT, kind=trainer_pb2.PENALTY_KIND_HALF_DECORRELATION,
                                      weight=decorrelation),
    ]


def routing_spec() -> trainer_pb2.GradientRoutingSpec:
    groups = [
        trainer_pb2.RouteGroup(labels=trainer_pb2.LabelSet(labels=labels),
                               units=trainer_pb2.UnitRange(start=start, stop=stop))
        for labels, (start, stop) in zip(GROUP_LABELS, HALVES)
    ]
    return trainer_pb2.GradientRoutingSpec(rules=[trainer_pb2.RoutingRule(site=LATENT, groups=groups)])


def group_of(y: torch.Tensor) -> torch.Tensor:
    """0 for digits 0–4, 1 for 5–9."""
    return torch.isin(y, torch.tensor(GROUP_LABELS[1])).long()


def run_one(arch, data, config: TrainConfig, *, seed: int, cert_epochs: int) -> dict:
    module = modules.build_module(arch, seed=seed)
    began = time.perf_counter()
    result = train(module, data.x_train, data.y_train, data.x_test, data.y_test, config,
                   rows_train=data.rows_train)
    train_seconds = time.perf_counter() - began
    with torch.no_grad():
        latent_train = module.encode(data.x_train).detach()
        latent_test = module.encode(data.x_test).detach()
    began = time.perf_counter()
    cert = certificate_errors(latent_train, data.x_train, group_of(data.y_train), HALVES,
                              epochs=cert_epochs, seed=seed, x_eval=data.x_test,
                              latent_eval=latent_test, group_eval=group_of(data.y_test))
    cert_seconds = time.perf_counter() - began
    ratio = cert.ratio
    # Mean |code| per half on each held-out group: how much a half still fires on foreign digits.
    g_test = group_of(data.y_test)
    activity = [[float(latent_test[g_test == g][:, a:b].abs().mean()) for a, b in HALVES] for g in (0, 1)]
    return {
        "recon_test_mae": result.metrics["test_loss"],
        "recon_train_mae": result.metrics["train_loss"],
        "penalty_train": result.metrics.get("train_penalty"),
        "own": cert.own,
        "foreign": cert.foreign,
        "ratio": ratio,
        "min_ratio": min(ratio),
        "mean_abs_code": {"group0_by_half": activity[0], "group1_by_half": activity[1]},
        "train_seconds": train_seconds,
        "certificate_seconds": cert_seconds,
        "steps": result.steps,
    }


def summarize(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"seeds_ok": 0}

    def med(f):
        return statistics.median(f(r) for r in ok)

    return {
        "seeds_ok": len(ok),
        "median_ratio_half0": med(lambda r: r["ratio"][0]),
        "median_ratio_half1": med(lambda r: r["ratio"][1]),
        "median_min_ratio": med(lambda r: r["min_ratio"]),
        "min_min_ratio": min(r["min_ratio"] for r in ok),
        "max_min_ratio": max(r["min_ratio"] for r in ok),
        "median_own": [med(lambda r: r["own"][h]) for h in range(2)],
        "median_foreign": [med(lambda r: r["foreign"][h]) for h in range(2)],
        "median_recon_test_mae": med(lambda r: r["recon_test_mae"]),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds or (1 if args.quick else 5)))
    epochs = args.epochs or (15 if args.quick else 100)
    cert_epochs = args.cert_epochs or (60 if args.quick else 200)
    widths = [int(w) for w in args.widths.split(",")]
    if widths[-1] != HALVES[-1][1]:
        print(f"the code must have {HALVES[-1][1]} units (two halves of 16), got widths {widths}", file=sys.stderr)
        return 2

    arch = architecture(widths)
    sites = architectures.sites(arch)
    x, y = datasets.load_digits_dataset()
    compiled_penalties = tuple(translate.compile_penalties(penalty_specs(args.l1_weight, args.decorrelation_weight), sites))
    compiled_routing = tuple(translate.compile_routing(routing_spec(), sites, num_rows=len(x), num_classes=10))
    baseline_config = dict(epochs=epochs, batch_size=args.batch_size, lr=args.lr, optimizer="adam", loss="mae",
                           task_outputs=x.shape[1], reconstruct=True, penalties=compiled_penalties)
    settings = {
        "data": "scikit-learn 8x8 digits, x = pixel/16", "rows": len(x), "test_fraction": args.test_fraction,
        "split_seed": "= seed", "encoder_widths": widths, "activation": "relu", "loss": "mae (pixels)",
        "optimizer": "adam", "lr": args.lr, "batch_size": args.batch_size, "epochs": epochs,
        "penalties": [{"site": LATENT, "kind": "l1", "weight": args.l1_weight},
                      {"site": LATENT, "kind": "half_decorrelation", "weight": args.decorrelation_weight}],
        "routing": {"site": LATENT, "labels 0-4": list(HALVES[0]), "labels 5-9": list(HALVES[1])},
        "certificate": {"hidden": [256], "epochs": cert_epochs, "lr": 1e-3, "batch_size": 256,
                        "trained_on": "training split, all digits", "evaluated_on": "held-out split"},
        "seeds": seeds, "torch_threads": torch.get_num_threads(), "quick": args.quick,
        "checks": {"routed_median_min_ratio_at_least": ROUTED_MIN_RATIO,
                   "unrouted_median_ratio_within": list(UNROUTED_RANGE)},
    }
    out = common.Path(args.out)
    payload = {"benchmark": "gradient_routing", "paper": "Cloud et al., arXiv 2410.04332",
               "machine": common.machine(), "settings": settings, "runs": []}
    print(f"Gradient routing on 8x8 digits: autoencoder {'→'.join(map(str, widths))}, Adam {args.lr:g}, "
          f"batch {args.batch_size}, {epochs} epochs; L1 {args.l1_weight:g} + half-decorrelation "
          f"{args.decorrelation_weight:g} at '{LATENT}'; {len(seeds)} seed(s); certificate decoders "
          f"{cert_epochs} epochs; torch threads {torch.get_num_threads()}")
    header = (f"{'arm':9s} {'seed':>4s} {'recon':>6s} {'h0 own':>7s} {'h0 for':>7s} {'h0 ratio':>8s} "
              f"{'h1 own':>7s} {'h1 for':>7s} {'h1 ratio':>8s} {'min':>5s} {'time s':>7s}")
    print(header)
    print("-" * len(header))
    began = time.perf_counter()
    for seed in seeds:
        data = datasets.split(x, y, args.test_fraction, seed)
        for arm in ("routed", "unrouted"):
            config = TrainConfig(**baseline_config, seed=seed,
                                 routing=compiled_routing if arm == "routed" else ())
            try:
                rec = run_one(arch, data, config, seed=seed, cert_epochs=cert_epochs)
            except Exception as err:  # a diverged run is a result too
                rec = {"error": f"{type(err).__name__}: {err}"}
                print(f"{arm:9s} {seed:4d}  FAILED: {rec['error']}", flush=True)
            else:
                o, f, r = rec["own"], rec["foreign"], rec["ratio"]
                print(f"{arm:9s} {seed:4d} {rec['recon_test_mae']:6.4f} {o[0]:7.4f} {f[0]:7.4f} {r[0]:8.2f} "
                      f"{o[1]:7.4f} {f[1]:7.4f} {r[1]:8.2f} {rec['min_ratio']:5.2f} "
                      f"{rec['train_seconds'] + rec['certificate_seconds']:7.1f}", flush=True)
            payload["runs"].append({"arm": arm, "seed": seed, "test_rows": len(data.x_test), **rec})
            common.write_json(out, payload, final=False)
    total = time.perf_counter() - began

    summary = {arm: summarize([r for r in payload["runs"] if r["arm"] == arm]) for arm in ("routed", "unrouted")}
    routed, unrouted = summary["routed"], summary["unrouted"]
    complete = routed.get("seeds_ok") == len(seeds) and unrouted.get("seeds_ok") == len(seeds)
    routed_pass = complete and routed["median_min_ratio"] >= ROUTED_MIN_RATIO
    lo, hi = UNROUTED_RANGE
    unrouted_pass = complete and all(lo <= unrouted[k] <= hi for k in ("median_ratio_half0", "median_ratio_half1"))
    summary.update(total_wall_seconds=total, routed_pass=routed_pass, unrouted_pass=unrouted_pass,
                   all_pass=routed_pass and unrouted_pass)
    payload["summary"] = summary
    common.write_json(out, payload)

    print("-" * len(header))
    print("recon = the autoencoder's test MAE; h0 = code units [0,16) (owns digits 0-4), h1 = [16,32) (owns 5-9);"
          " own/for = certificate decoder MAE on the half's own / foreign group (held-out split);"
          " ratio = for/own; min = the smaller ratio")
    for arm in ("routed", "unrouted"):
        s = summary[arm]
        if s.get("seeds_ok"):
            print(f"{arm:9s} medians over {s['seeds_ok']} seed(s): ratio h0 {s['median_ratio_half0']:.2f}, "
                  f"h1 {s['median_ratio_half1']:.2f}, min {s['median_min_ratio']:.2f} "
                  f"(range of min {s['min_min_ratio']:.2f}-{s['max_min_ratio']:.2f}); recon MAE {s['median_recon_test_mae']:.4f}")
    if routed.get("seeds_ok"):
        print(f"{'PASS' if routed_pass else 'FAIL'}: routed median min ratio {routed['median_min_ratio']:.2f} "
              f"≥ {ROUTED_MIN_RATIO}")
    else:
        print("FAIL: no routed run finished")
    if unrouted.get("seeds_ok"):
        print(f"{'PASS' if unrouted_pass else 'FAIL'}: unrouted median ratios h0 {unrouted['median_ratio_half0']:.2f}, "
              f"h1 {unrouted['median_ratio_half1']:.2f} within {lo}-{hi}")
    else:
        print("FAIL: no unrouted run finished")
    print(f"total wall time {total:.0f} s; results in {out}")
    return 1 if args.check and not (routed_pass and unrouted_pass) else 0


if __name__ == "__main__":
    sys.exit(main())
