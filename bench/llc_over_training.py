"""LLC over training, through the platform: one training job, one audit over all its checkpoints, a plot (not run by make test).

    OMP_NUM_THREADS=1 .venv/bin/python bench/llc_over_training.py           # 50 epochs, 10 checkpoints, make run's audit
    OMP_NUM_THREADS=1 .venv/bin/python bench/llc_over_training.py --quick   # harness check: 5 epochs, 4 checkpoints, short chains

Starts the platform (`lambdascope.local.LocalPlatform` in a temporary directory: registry, trainer, estimator as
their own processes), submits a TrainSpec for the digits MLP 64→256→10 (SGD lr 0.05 momentum 0.9, batch 64,
50 epochs, test_fraction 0.2, seed 0: `make run`'s baseline) with `checkpoints.count = 10` (log-spaced steps),
waits for it, then starts ONE audit over every checkpoint (`client.start_audit(version_ids, dataset_id, ...)`,
as `lambdascope audit --training-job` does) on the training split the trainer registered (lineage), with
`make run`'s sampler settings: automatic step calibration per checkpoint, 4 chains × (1000 burn-in + 600
draws), γ = 10, batch 256, nβ = n / log n, sampler seed 0. One report per checkpoint comes back.

Per checkpoint it writes the step, λ̂ mean ± std (std across chains), the verdict and its reasons, the
diagnostics, the training cross-entropy at the checkpoint (the report's L_n(w*), measured by the estimator on
the full training split) and the test accuracy: the job reports it for the final weights only, so for every
checkpoint it is recomputed here from the downloaded weights on the trainer's held-out split
(`datasets.split(x, y, 0.2, seed=0)`, the split the trainer used), and the final one is checked against the
job's. Writes bench/results/llc_over_training.json and docs/llc_over_training.svg (hand-written SVG).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

import common  # sets sys.path for the repository
import torch

from lambdascope import artifacts, modules
from lambdascope.client import Client
from lambdascope.local import LocalPlatform
from lambdascope.v1 import audit_pb2, jobs_pb2, models_pb2, trainer_pb2
from lambdascope.training import datasets

WIDTHS = [64, 256, 10]
SEED = 0
SVG = common.ROOT / "docs" / "llc_over_training.svg"
COLOURS = {"ok": "#2e7d32", "warning": "#ef6c00", "failed": "#c62828"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 50; --quick 5)")
    p.add_argument("--checkpoints", type=int, default=None, help="log-spaced checkpoints (default 10; --quick 4)")
    p.add_argument("--chains", type=int, default=None, help="SGLD chains (default 4; --quick 2)")
    p.add_argument("--burnin", type=int, default=None, help="SGLD burn-in steps (default 1000; --quick 100)")
    p.add_argument("--draws", type=int, default=None, help="SGLD draws per chain (default 600; --quick 100)")
    p.add_argument("--quick", action="store_true", help="harness check: 5 epochs, 4 checkpoints, short chains")
    p.add_argument("--data-dir", default=None, help="keep the platform's data here (default: a temporary dir)")
    p.add_argument("--out", default=str(common.RESULTS / "llc_over_training.json"))
    p.add_argument("--svg", default=str(SVG))
    p.add_argument("--self-model-weight", type=float, default=0.0,
                   help="train with the self-modeling objective at this weight (make run's is 50; default 0: the "
                        "baseline)")
    return p.parse_args(argv)


def train_spec(epochs: int, checkpoints: int, self_model_weight: float = 0.0) -> trainer_pb2.TrainSpec:
    spec = trainer_pb2.TrainSpec(
        model_name="digits-mlp-over-training", loss=models_pb2.LOSS_KIND_CROSS_ENTROPY, epochs=epochs,
        batch_size=64, seed=SEED,
        architecture=models_pb2.Architecture(mlp=models_pb2.MLPArchitecture(widths=WIDTHS)),
        dataset=trainer_pb2.DatasetSpec(builtin="digits", test_fraction=0.2),
        optimizer=trainer_pb2.OptimizerSpec(kind="sgd", learning_rate=0.05, momentum=0.9),
        checkpoints=trainer_pb2.CheckpointPolicy(count=checkpoints))
    if self_model_weight:
        spec.self_modeling.CopyFrom(trainer_pb2.SelfModelingSpec(layer=1, weight=self_model_weight))
    return spec


class Printer:
    """One line per job event, at most every `every` seconds while running."""

    def __init__(self, label: str, every: float = 15.0):
        self.label, self.every, self.last = label, every, -math.inf
        self.events: list[jobs_pb2.JobEvent] = []

    def __call__(self, event: jobs_pb2.JobEvent) -> None:
        self.events.append(event)
        now = time.monotonic()
        running = event.state == jobs_pb2.JOB_STATE_RUNNING
        if running and now - self.last < self.every:
            return
        self.last = now
        state = jobs_pb2.JobState.Name(event.state).removeprefix("JOB_STATE_").lower()
        metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(event.metrics.items()) if k in ("loss", "accuracy", "llc"))
        frac = f"{100 * event.step / event.total:5.1f}%" if event.total else "     "
        print(f"  {self.label}: {frac} {state} {metrics} {event.message}".rstrip(), flush=True)


def verdict_name(report: audit_pb2.AuditReport) -> str:
    return audit_pb2.VerdictState.Name(report.verdict.state).removeprefix("VERDICT_STATE_").lower()


def test_accuracy(client: Client, version_id: str, x_test: torch.Tensor, y_test: torch.Tensor, scratch: str) -> float:
    version = client.get_model_version(version_id)
    path = client.download_model_version(version_id, os.path.join(scratch, f"{version_id}.safetensors"))
    module = modules.build_module(version.architecture)
    modules.load_weights(module, artifacts.load_safetensors(path))
    module.eval()
    with torch.no_grad():
        return float((module(x_test).argmax(dim=1) == y_test).float().mean())


# ------------------------------------------------------------------------------------------ the plot


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    span = high - low if high > low else abs(high) or 1.0
    raw = span / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(low / step) * step
    ticks, t = [], first
    while t <= high + 1e-9 * step:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < high:
        ticks.append(round(t, 10))
    return ticks


def esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _llc_points(out: list[str], rows: list[dict], sx, sy) -> None:
    """λ̂ line, error bars (± chain std) and verdict-coloured points."""
    pts = " ".join(f"{sx(r['step']):.1f},{sy(r['llc_mean']):.1f}" for r in rows)
    out.append(f'<polyline points="{pts}" fill="none" stroke="#444" stroke-width="1.2"/>')
    for r in rows:
        x, colour = sx(r["step"]), COLOURS.get(r["verdict"], "black")
        y0, y1 = sy(r["llc_mean"] - r["llc_std"]), sy(r["llc_mean"] + r["llc_std"])
        out.append(f'<line x1="{x:.1f}" y1="{y0:.1f}" x2="{x:.1f}" y2="{y1:.1f}" stroke="{colour}" stroke-width="1.5"/>')
        for yy in (y0, y1):
            out.append(f'<line x1="{x - 4:.1f}" y1="{yy:.1f}" x2="{x + 4:.1f}" y2="{yy:.1f}" stroke="{colour}" '
                       'stroke-width="1.5"/>')
        out.append(f'<circle cx="{x:.1f}" cy="{sy(r["llc_mean"]):.1f}" r="5" fill="{colour}" stroke="black" '
                   f'stroke-width="0.6"><title>step {r["step"]}: λ̂ {r["llc_mean"]:.2f} ± {r["llc_std"]:.2f} '
                   f'({r["verdict"]})</title></circle>')


def _log_x_axis(out: list[str], sx, x_lo: float, x_hi: float, top: float, ph: float) -> None:
    """Decade ticks (labelled, with a grid line) and 2..9 minor ticks on a log10 axis spanning [x_lo, x_hi]."""
    for decade in range(math.floor(x_lo), math.ceil(x_hi) + 1):
        for m in range(1, 10):
            v = m * 10 ** decade
            if not (x_lo - 1e-9 <= math.log10(v) <= x_hi + 1e-9):
                continue
            x = sx(v)
            major = m == 1
            out.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + (6 if major else 3)}" '
                       'stroke="black"/>')
            if major:
                out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#e6e6e6"/>')
                out.append(f'<text x="{x:.1f}" y="{top + ph + 20}" text-anchor="middle">{v:g}</text>')


def _y_axis(out: list[str], ticks: list[float], sy, left: float, pw: float) -> None:
    for t in ticks:
        y = sy(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e6e6e6"/>')
        out.append(f'<line x1="{left - 5}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="black"/>')
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')


def draw_svg(rows: list[dict], title: str, subtitle: str) -> str:
    """Left: λ̂ ± chain std against the training step (log x) for every checkpoint, points coloured by verdict,
    training cross-entropy on a right log axis. Right: the same λ̂ zoomed to the checkpoints with λ̂ ≥ 0."""
    width, height = 1000, 520
    left, top, bottom = 78, 100, 64
    pw, ph = 540, height - top - bottom
    steps = [r["step"] for r in rows]
    x_lo, x_hi = 0.0, math.ceil(math.log10(max(steps)) * 10) / 10 + 0.05
    lows = [r["llc_mean"] - r["llc_std"] for r in rows]
    highs = [r["llc_mean"] + r["llc_std"] for r in rows]
    yticks = nice_ticks(min(min(lows), 0.0), max(max(highs), 0.0))
    y_lo, y_hi = yticks[0], yticks[-1]
    losses = [r["train_loss"] for r in rows if r["train_loss"] > 0]
    l_lo = math.floor(math.log10(min(losses)))
    l_hi = math.ceil(math.log10(max(losses)))
    if l_hi == l_lo:
        l_hi += 1

    def sx(step: float) -> float:
        return left + pw * (math.log10(step) - x_lo) / (x_hi - x_lo)

    def sy(v: float) -> float:
        return top + ph * (1 - (v - y_lo) / (y_hi - y_lo))

    def sl(loss: float) -> float:
        return top + ph * (1 - (math.log10(loss) - l_lo) / (l_hi - l_lo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{esc(title)}</text>',
           *[f'<text x="{width / 2}" y="{43 + 15 * i}" text-anchor="middle" font-size="11" fill="#555">{esc(line)}</text>'
             for i, line in enumerate(subtitle.split("\n"))]]
    # ---- main panel
    _y_axis(out, yticks, sy, left, pw)
    if y_lo < 0 < y_hi:
        out.append(f'<line x1="{left}" y1="{sy(0):.1f}" x2="{left + pw}" y2="{sy(0):.1f}" stroke="#555" '
                   'stroke-width="0.8"/>')
        out.append(f'<text x="{left + 6}" y="{sy(0) - 5:.1f}" font-size="11" fill="#555">λ̂ = 0</text>')
    _log_x_axis(out, sx, x_lo, x_hi, top, ph)
    for e in range(l_lo, l_hi + 1):  # right axis: training cross-entropy (log)
        y = sl(10 ** e)
        out.append(f'<line x1="{left + pw}" y1="{y:.1f}" x2="{left + pw + 5}" y2="{y:.1f}" stroke="#666"/>')
        out.append(f'<text x="{left + pw + 8}" y="{y + 4:.1f}" fill="#666">{10 ** e:g}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 22}" text-anchor="middle" font-size="13">'
               'training step (log scale)</text>')
    out.append(f'<text transform="translate(22 {top + ph / 2}) rotate(-90)" text-anchor="middle" font-size="13">'
               'λ̂ (LLC estimate), error bar = std across chains</text>')
    out.append(f'<text transform="translate({left + pw + 62} {top + ph / 2}) rotate(90)" text-anchor="middle" '
               'font-size="13" fill="#666">training cross-entropy L_n(w*) (log scale)</text>')
    pts = " ".join(f"{sx(r['step']):.1f},{sl(r['train_loss']):.1f}" for r in rows if r["train_loss"] > 0)
    out.append(f'<polyline points="{pts}" fill="none" stroke="#999" stroke-width="1.5" stroke-dasharray="5 4"/>')
    for r in rows:
        if r["train_loss"] > 0:
            out.append(f'<rect x="{sx(r["step"]) - 3:.1f}" y="{sl(r["train_loss"]) - 3:.1f}" width="6" height="6" '
                       'fill="white" stroke="#999"/>')
    _llc_points(out, rows, sx, sy)
    # ---- zoom panel: the checkpoints with λ̂ ≥ 0
    kept = [r for r in rows if r["llc_mean"] >= 0]
    if kept:
        zl, zw = left + pw + 130, width - (left + pw + 130) - 24
        zx_lo = math.floor(math.log10(min(r["step"] for r in kept)) * 10) / 10 - 0.05
        zx_hi = math.ceil(math.log10(max(r["step"] for r in kept)) * 10) / 10 + 0.05
        zticks = nice_ticks(min(r["llc_mean"] - r["llc_std"] for r in kept),
                            max(r["llc_mean"] + r["llc_std"] for r in kept), count=5)

        def zx(step: float) -> float:
            return zl + zw * (math.log10(step) - zx_lo) / (zx_hi - zx_lo)

        def zy(v: float) -> float:
            return top + ph * (1 - (v - zticks[0]) / (zticks[-1] - zticks[0]))

        _y_axis(out, zticks, zy, zl, zw)
        _log_x_axis(out, zx, zx_lo, zx_hi, top, ph)
        out.append(f'<rect x="{zl}" y="{top}" width="{zw}" height="{ph}" fill="none" stroke="black"/>')
        out.append(f'<text x="{zl + zw / 2}" y="{top - 8}" text-anchor="middle" font-size="12">'
                   'zoom: checkpoints with λ̂ ≥ 0</text>')
        out.append(f'<text x="{zl + zw / 2}" y="{height - 22}" text-anchor="middle" font-size="13">'
                   'training step</text>')
        _llc_points(out, kept, zx, zy)
    # ---- legend: one row above the main panel
    lx, ly = left + 4, top - 16
    for name, colour in COLOURS.items():
        out.append(f'<circle cx="{lx + 5}" cy="{ly - 4}" r="5" fill="{colour}" stroke="black" stroke-width="0.6"/>')
        out.append(f'<text x="{lx + 15}" y="{ly}">λ̂, verdict {name}</text>')
        lx += 96 + 7 * len(name)
    out.append(f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 22}" y2="{ly - 4}" stroke="#999" stroke-width="1.5" '
               'stroke-dasharray="5 4"/>')
    out.append(f'<rect x="{lx + 8}" y="{ly - 7}" width="6" height="6" fill="white" stroke="#999"/>')
    out.append(f'<text x="{lx + 28}" y="{ly}">training CE (right axis)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    epochs = args.epochs or (5 if args.quick else 50)
    count = args.checkpoints or (4 if args.quick else 10)
    chains = args.chains or (2 if args.quick else 4)
    burnin = args.burnin or (100 if args.quick else 1000)
    draws = args.draws or (100 if args.quick else 600)
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="lambdascope-llc-over-training-")
    payload = {"benchmark": "llc_over_training", "machine": common.machine()}
    print(f"LLC over training through the platform: MLP {'→'.join(map(str, WIDTHS))} on digits, SGD lr 0.05 "
          f"momentum 0.9, batch 64, {epochs} epochs, {count} log-spaced checkpoints; audit: {chains} chains × "
          f"({burnin} burn-in + {draws} draws), ε calibrated per checkpoint, sampler seed 0 (platform data in "
          f"{data_dir})", flush=True)
    began = time.perf_counter()
    x, y = datasets.load_digits_dataset()
    held_out = datasets.split(x, y, 0.2, seed=SEED)  # the trainer's split for this spec
    # 1 torch thread per worker (also the default here: 2 cores / 2 concurrent jobs per service)
    env = {"LAMBDASCOPE_WORKER_THREADS": "1", "OMP_NUM_THREADS": "1"}
    with LocalPlatform(data_dir, extra_env=env) as platform, platform.client() as client, \
            tempfile.TemporaryDirectory(prefix="llc-over-training-") as scratch:
        print("platform: " + ", ".join(f"{k} {v}" for k, v in platform.endpoints.items()), flush=True)
        spec = train_spec(epochs, count, args.self_model_weight)
        started = time.perf_counter()
        train_events = Printer("train")
        job = client.wait(client.start_training(spec).id, on_event=train_events)
        train_seconds = time.perf_counter() - started
        if job.state != jobs_pb2.JOB_STATE_SUCCEEDED:
            print(f"training {jobs_pb2.JobState.Name(job.state)}: {job.message}", file=sys.stderr)
            return 1
        versions = [client.get_model_version(v) for v in job.output_ids]
        dataset_id = versions[0].lineage.dataset_version_id
        print(f"trained in {train_seconds:.0f} s: {len(versions)} checkpoints at steps "
              f"{[v.lineage.step for v in versions]}, test accuracy {100 * job.metrics['test_accuracy']:.2f}%; "
              f"training split registered as dataset {dataset_id}", flush=True)

        config = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_CROSS_ENTROPY)
        config.sampler.chains, config.sampler.burnin, config.sampler.draws = chains, burnin, draws
        config.sampler.seed = 0
        started = time.perf_counter()
        audit_events = Printer("audit", every=30.0)
        audit = client.wait(client.start_audit([v.id for v in versions], dataset_id, config).id,
                            on_event=audit_events)
        audit_seconds = time.perf_counter() - started
        if audit.state != jobs_pb2.JOB_STATE_SUCCEEDED:
            print(f"audit {jobs_pb2.JobState.Name(audit.state)}: {audit.message}", file=sys.stderr)
            payload["audit_failed"] = {"state": jobs_pb2.JobState.Name(audit.state), "message": audit.message}
            common.write_json(common.Path(args.out), payload, final=False)
            return 1
        reports = [client.get_report(r) for r in audit.output_ids]
        by_version = {r.model_version_id: r for r in reports}

        rows = []
        running = [(e.step, dict(e.metrics)) for e in train_events.events
                   if e.state == jobs_pb2.JOB_STATE_RUNNING and "loss" in e.metrics]
        for version in versions:
            r = by_version[version.id]
            step = version.lineage.step
            near = min(running, key=lambda e: abs(e[0] - step)) if running else None
            acc = test_accuracy(client, version.id, held_out.x_test, held_out.y_test, scratch)
            d = r.diagnostics
            rows.append({
                "step": step, "epoch": step / math.ceil(len(held_out.x_train) / 64), "model_version_id": version.id,
                "report_id": audit.output_ids[reports.index(r)],
                "llc_mean": r.llc.mean, "llc_std": r.llc.std, "per_chain": list(r.llc.per_chain),
                "verdict": verdict_name(r), "verdict_reasons": list(r.verdict.reasons),
                "train_loss": r.init_loss, "test_accuracy": acc,
                "running_train_loss_near_step": {"step": near[0], "loss": near[1]["loss"],
                                                 "accuracy": near[1].get("accuracy")} if near else None,
                "step_size": r.config.sampler.step_size, "nbeta": r.config.sampler.nbeta,
                "localization": r.config.sampler.localization, "rhat": d.rhat, "ess": d.ess,
                "acceptance": d.acceptance, "below_init_fraction": d.below_init_fraction,
                "calibration_summary": r.calibration.summary, "seconds": r.timing.seconds,
                "num_examples": r.num_examples, "num_parameters": r.num_parameters,
            })
        final_job_acc = job.metrics["test_accuracy"]
    total = time.perf_counter() - began

    payload.update({
        "settings": {"widths": WIDTHS, "epochs": epochs, "batch_size": 64, "optimizer": "sgd lr 0.05 momentum 0.9",
                     "self_model_weight": args.self_model_weight,
                     "dataset": "builtin digits, test_fraction 0.2, seed 0", "checkpoints": count,
                     "sampler": {"chains": chains, "burnin": burnin, "draws": draws, "step_size": "calibrated",
                                 "seed": 0, "localization": rows[0]["localization"], "nbeta": rows[0]["nbeta"],
                                 "batch_size": reports[0].config.sampler.batch_size},
                     "train_loss": "report.init_loss: L_n(w*) on the training split, measured by the estimator",
                     "test_accuracy": "recomputed from each downloaded checkpoint on datasets.split(x, y, 0.2, seed=0)"},
        "training_job": {"id": job.id, "seconds": train_seconds, "metrics": dict(job.metrics)},
        "audit_job": {"id": audit.id, "seconds": audit_seconds},
        "checkpoints": rows,
        "final_test_accuracy_job": final_job_acc,
        "final_test_accuracy_recomputed": rows[-1]["test_accuracy"],
        "total_wall_seconds": total,
    })
    common.write_json(common.Path(args.out), payload)
    sub = (f"MLP 64→256→10 on sklearn digits (n = {rows[0]['num_examples']} training examples), SGD lr 0.05 "
           f"momentum 0.9, batch 64, {epochs} epochs, {count} log-spaced checkpoints\n"
           f"audit: {chains} chains × ({burnin} + {draws}) SGLD steps, ε calibrated per checkpoint, γ = "
           f"{rows[0]['localization']:g}, nβ = n/log n = {rows[0]['nbeta']:.0f}")
    svg_path = common.Path(args.svg)
    svg_path.parent.mkdir(parents=True, exist_ok=True)
    svg_path.write_text(draw_svg(rows, "LLC over training (one audit over all checkpoints)", sub))

    print()
    print(f"{'step':>5s} {'epoch':>6s} {'λ̂':>8s} {'± std':>6s} {'verdict':<8s} {'train CE':>9s} {'test acc':>8s} "
          f"{'ε':>8s} {'R-hat':>6s} {'ESS':>5s} {'accept':>6s} {'below':>5s} {'s':>4s}")
    for r in rows:
        print(f"{r['step']:5d} {r['epoch']:6.2f} {r['llc_mean']:8.2f} {r['llc_std']:6.2f} {r['verdict']:<8s} "
              f"{r['train_loss']:9.5f} {100 * r['test_accuracy']:7.2f}% {r['step_size']:8.2e} {r['rhat']:6.3f} "
              f"{r['ess']:5.0f} {r['acceptance']:6.3f} {r['below_init_fraction']:5.2f} {r['seconds']:4.0f}")
    print()
    for r in rows:
        for reason in r["verdict_reasons"]:
            print(f"  step {r['step']}: {reason}")
    print(f"\nfinal test accuracy: job {100 * final_job_acc:.2f}%, recomputed {100 * rows[-1]['test_accuracy']:.2f}%; "
          f"below = share of kept draws below L_n(w*)")
    print(f"training {train_seconds:.0f} s, audit of {len(rows)} checkpoints {audit_seconds:.0f} s, total "
          f"{total:.0f} s; results in {args.out}, plot in {svg_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
