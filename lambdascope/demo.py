"""`make run`: the main job on the embedded default.

Starts the platform (three services, SQLite + local objects in a fresh directory), trains a
baseline MLP and a self-modeling MLP on scikit-learn's digits through the trainer, audits the
final checkpoint of each through the estimator on the data it was trained on, prints a
side-by-side table with the difference of the two λ̂ against the estimator's noise, writes the
audits' HTML pages and stops the platform.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

from lambdascope.client import Client
from lambdascope.local import LocalPlatform
from lambdascope.progress import ProgressBar
from lambdascope.reports import html, views
from lambdascope.v1 import audit_pb2, jobs_pb2, models_pb2, trainer_pb2

WIDTHS = [64, 256, 10]


def spec(name: str, self_model_weight: float, epochs: int, seed: int) -> trainer_pb2.TrainSpec:
    s = trainer_pb2.TrainSpec(
        model_name=name, loss=models_pb2.LOSS_KIND_CROSS_ENTROPY, epochs=epochs, batch_size=64,
        seed=seed,
        architecture=models_pb2.Architecture(mlp=models_pb2.MLPArchitecture(widths=WIDTHS)),
        dataset=trainer_pb2.DatasetSpec(builtin="digits", test_fraction=0.2),
        optimizer=trainer_pb2.OptimizerSpec(kind="sgd", learning_rate=0.05, momentum=0.9))
    if self_model_weight:
        s.self_modeling.layer, s.self_modeling.weight = 1, self_model_weight
    return s


def wait(client: Client, job: jobs_pb2.Job, label: str) -> jobs_pb2.Job:
    bar = ProgressBar(label)
    done = client.wait(job.id, on_event=bar.update)
    bar.close()
    if done.state != jobs_pb2.JOB_STATE_SUCCEEDED:
        raise SystemExit(f"{label} {jobs_pb2.JobState.Name(done.state)}: {done.message}")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--self-model-weight", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, help="fix the audits' SGLD draws per chain (default: "
                        "each audit runs until its diagnostics say it can be trusted)")
    parser.add_argument("--burnin", type=int, help="fix the audits' SGLD burn-in steps (default: as --draws)")
    parser.add_argument("--data-dir", help="keep the platform's data here (default: temporary)")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="lambdascope-run-")
    print(f"starting the platform (data in {data_dir})", flush=True)
    with LocalPlatform(data_dir) as platform:
        for name, address in platform.endpoints.items():
            print(f"  {name:<10} {address}", flush=True)
        with platform.client() as client:
            rows, sampler = run_comparison(client, args)
            digests = client.dataset_digests(row[2].dataset_id for row in rows)
            pages = write_pages(client, [row[2] for row in rows], digests, pathlib.Path(data_dir) / "pages")
    print()
    print(f"{'model':<18} {'test acc':>9} {'LLC':>9}   {'± s.e.':<7} {'verdict':<8} {'step':>9} "
          f"{'train s':>8} {'audit s':>8}")
    for label, acc, report, train_s, audit_s in rows:
        verdict = audit_pb2.VerdictState.Name(report.verdict.state).removeprefix("VERDICT_STATE_")
        print(f"{label:<18} {100 * acc:8.2f}% {report.llc.mean:9.2f} ± {report.llc.standard_error:<5.2f} "
              f"{verdict.lower():<8} {report.config.sampler.step_size:9.3g} {train_s:8.1f} "
              f"{audit_s:8.1f}")
        for reason in report.verdict.reasons:
            print(f"    {reason}")
        print(f"    {report.stopping.draws} draws per chain after {report.stopping.burnin} burn-in steps: "
              f"{report.stopping.summary}")
    reports = [report for _label, _acc, report, _t, _a in rows]
    gammas = " and ".join(dict.fromkeys(f"{r.config.sampler.localization:.3g}" for r in reports))
    print(f"\nLLC: λ̂ = nβ·(E[L_n(w)] − L_n(w*)) from {sampler.chains} SGLD chains (step calibrated per "
          f"model, localization {gammas} set from each model's curvature, nβ {sampler.nbeta:.1f}) on each "
          "model's training split; ± is λ̂'s standard error (what a rerun would move it by: the Monte "
          "Carlo error and the drift left in the draws).")
    for comparison in views.compare(reports, digests):
        print(comparison.sentence)
        for warning in comparison.warnings:
            print(f"  warning: {warning}")
    print(f"\nreport pages (open in a browser): {', '.join(str(p) for p in pages)}")
    print("\nplatform stopped cleanly")
    return 0


def write_pages(client: Client, reports: list[audit_pb2.AuditReport], digests: dict[str, str],
                folder: pathlib.Path) -> list[pathlib.Path]:
    """Each audit's stored HTML page, and the comparison's, into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for report in reports:
        path = folder / f"{report.id}.html"
        path.write_bytes(client.get_report_page(report.id))
        paths.append(path)
    paths.append(folder / "compare.html")
    paths[-1].write_text(html.compare_page(reports, digests))
    return paths


def run_comparison(client: Client, args: argparse.Namespace
                   ) -> tuple[list[tuple], audit_pb2.SamplerConfig]:
    runs = {"baseline": 0.0, f"self-model w={args.self_model_weight:g}": args.self_model_weight}
    rows = []
    for label, weight in runs.items():
        name = "digits-mlp-selfmodel" if weight else "digits-mlp-baseline"
        started = time.perf_counter()
        job = wait(client, client.start_training(spec(name, weight, args.epochs, args.seed)),
                   f"train {label}")
        train_s = time.perf_counter() - started
        final = client.get_model_version(job.output_ids[-1])
        config = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_CROSS_ENTROPY)
        config.sampler.seed = args.seed
        if args.draws is not None:
            config.sampler.draws = args.draws
        if args.burnin is not None:
            config.sampler.burnin = args.burnin
        started = time.perf_counter()
        audit = wait(client, client.start_audit(final.id, final.lineage.dataset_version_id, config),
                     f"audit {label}")
        report = client.get_report(audit.output_ids[0])
        rows.append((label, job.metrics["test_accuracy"], report, train_s,
                     time.perf_counter() - started))
    return rows, report.config.sampler


if __name__ == "__main__":
    sys.exit(main())
