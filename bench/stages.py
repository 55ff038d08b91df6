"""Stage detection checked against a case whose stages theory gives exactly (issue 14, item 4).

    .venv/bin/python bench/stages.py               # the DLN saddle-to-saddle run, default audits
    .venv/bin/python bench/stages.py --seed 3 --per-decade 8
    .venv/bin/python bench/stages.py --trajectories bench/results/llc_over_training*.json   # stored runs

A deep linear network (widths 20, 4, 4, 20) trained by gradient descent from a small
initialization on a teacher with singular values 10, 3.5, 1.2 learns them one at a time
(bench/saddles.py). Every log-spaced checkpoint is audited with the estimator's defaults (run
until trusted) and its own outputs as targets (`--model-targets` in the CLI); stage detection
(lambdascope.llc.stages) reads the curve of λ̂ against the step. Checks, printed at the end:

- the flat stages after the first rise (the plateaus of learned ranks 1 … R) number the teacher's
  rank R;
- λ̂ averaged over each plateau is within 10% of Aoyagi's λ for that rank.

The initial plateau (rank 0, before anything is learned) is reported too, apart from the checks.
Writes bench/results/stages.json.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import common  # sets sys.path for the product
import saddles
import torch

from lambdascope.llc.llc import SGLDConfig
from lambdascope.llc.stages import detect_stages

TOLERANCE = 0.10


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=30_000, help="gradient-descent steps (default 30,000)")
    p.add_argument("--per-decade", type=int, default=6, help="checkpoints per factor of ten in steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(common.RESULTS / "stages.json"))
    p.add_argument("--trajectories", nargs="+", metavar="JSON",
                   help="instead: the stages of LLC-over-training runs stored by bench/llc_over_training.py")
    return p.parse_args(argv)


def trajectory_stages(path: Path) -> None:
    """Print the stages stage detection finds in a stored LLC-over-training run (its checkpoints
    at a minimum; those before are left out, as the CLI does)."""
    run = json.loads(path.read_text())
    points = [c for c in run["checkpoints"] if not any("not a local minimum" in r for r in c["verdict_reasons"])]
    print(f"{path}: {len(run['checkpoints'])} checkpoints, {len(points)} at a minimum "
          f"(self-modeling weight {run['settings'].get('self_model_weight', 0)})")
    for c in points:
        print(f"  step {c['step']:>5}  λ̂ {c['llc_mean']:7.2f} ± {c['llc_std']:5.2f}  train loss {c['train_loss']:.4f}  "
              f"{c['verdict']}")
    if len(points) < 3:
        print("  fewer than three checkpoints at a minimum: no stages")
        return
    found = detect_stages([c["step"] for c in points], [c["llc_mean"] for c in points],
                          [c["llc_std"] / math.sqrt(len(c["per_chain"])) for c in points],
                          [c["train_loss"] for c in points])
    for st in found:
        print(f"  stage: steps {st.start}–{st.end}: {st.label} (λ̂ {st.llc_change:+.2f})")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.trajectories:
        for path in args.trajectories:
            trajectory_stages(Path(path))
        return 0
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    checkpoints, x = saddles.train(args.seed, args.steps, saddles.log_spaced(args.steps, args.per_decade))
    trained = time.perf_counter() - began
    print(f"trained {args.steps} steps in {trained:.0f} s; {len(checkpoints)} checkpoints; widths {saddles.WIDTHS}, "
          f"teacher singular values {saddles.SINGULAR_VALUES}", flush=True)

    def show(c: saddles.Checkpoint) -> None:
        print(f"  step {c.step:>6}  loss {c.loss:9.5f}  rank {c.rank}  λ̂ {c.llc:7.2f} ± {c.llc_std:5.2f}  "
              f"γ {c.gamma:.3g}  {c.verdict:<7} {c.seconds:5.1f} s", flush=True)
    saddles.audit(checkpoints, x, SGLDConfig(seed=args.seed), show)
    found, plateaus = saddles.plateaus(checkpoints)
    print("\nstages:")
    for st in found:
        print(f"  steps {st.start:>6}–{st.end:<6} {st.label:<22} λ̂ {st.llc_change:+8.2f}")
    learned = [p for p in plateaus if p.stage.first > 0 or p.rank > 0]  # after the first rise
    initial = [p for p in plateaus if p not in learned]
    rank = len(saddles.SINGULAR_VALUES)
    print("\nplateaus (rank: λ̂ against Aoyagi's λ):")
    for p in plateaus:
        kind = "initial, not checked" if p in initial else ("ok" if abs(p.rel_err) <= TOLERANCE else "MISS")
        print(f"  rank {p.rank}: λ̂ {p.llc:7.2f}  λ {p.theory:6.1f}  {100 * p.rel_err:+6.1f}%  ({kind})")
    count_ok = len(learned) == rank and [p.rank for p in learned] == list(range(1, rank + 1))
    values_ok = all(abs(p.rel_err) <= TOLERANCE for p in learned)
    print(f"\nplateaus of learned ranks found: {len(learned)} (teacher rank {rank}): {'ok' if count_ok else 'MISS'}")
    print(f"λ̂ within {100 * TOLERANCE:.0f}% of theory on each: {'ok' if values_ok else 'MISS'}")
    seconds = time.perf_counter() - began
    print(f"total {seconds:.0f} s")
    common.write_json(Path(args.out), {
        "argv": sys.argv[1:], "machine": common.machine(), "seed": args.seed, "steps": args.steps,
        "widths": list(saddles.WIDTHS), "singular_values": list(saddles.SINGULAR_VALUES),
        "checkpoints": [{"step": c.step, "loss": c.loss, "rank": c.rank, "singular_values": c.singular_values,
                         "llc": c.llc, "llc_std": c.llc_std, "gamma": c.gamma, "verdict": c.verdict,
                         "seconds": c.seconds}
                        for c in checkpoints],
        "stages": [{"start": st.start, "end": st.end, "llc": st.llc, "loss": st.loss, "llc_change": st.llc_change}
                   for st in found],
        "plateaus": [{"rank": p.rank, "llc": p.llc, "theory": p.theory, "rel_err": p.rel_err,
                      "checked": p not in initial} for p in plateaus],
        "count_ok": count_ok, "values_ok": values_ok, "seconds": seconds})
    return 0 if count_ok and values_ok else 1


if __name__ == "__main__":
    sys.exit(main())
