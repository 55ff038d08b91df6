"""`lambdascope`: the command line over the SDK (up, audit, train, models, datasets, alias, tag,
rm, gc, jobs, reports, report, compare, whoami, admin)."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import signal
import sys
import threading
from collections.abc import Callable

import grpc
from google.protobuf import json_format

from lambdascope import cli_admin, discovery, enums, fit, inspection, specs, tls
from lambdascope.client import Client, PlatformNotFound
from lambdascope.local import LocalPlatform
from lambdascope.progress import ProgressBar
from lambdascope.reports import views
from lambdascope.v1 import audit_pb2, jobs_pb2, models_pb2, registry_pb2, trainer_pb2

def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"write on or off (got {text!r})")
    return text == "on"


SAMPLER_FLAGS = {  # flag -> (SamplerConfig field, type, help); a test checks the defaults named
    "chains": ("chains", int, "independent SGLD chains (default 4)"),
    "until_ess": ("until_ess", float, "run until the kept draws' bulk ESS over all chains reaches this "
                  "(default 200)"),
    "max_rhat": ("max_rhat", float, "... and their split R-hat is at most this (default 1.05)"),
    "max_mcse": ("max_mcse", float, "... and the Monte Carlo error of λ̂ is at most this fraction of it "
                 "(default 0.02)"),
    "max_drift": ("max_drift", float, "... and λ̂ moves by at most this fraction per doubling of the "
                  "chains' age into the draws, measured to within it (default 0.02)"),
    "max_steps": ("max_steps", int, "cap on steps per chain of a run that chooses its length "
                  "(default 100000; reaching it gives a warning)"),
    "max_seconds": ("max_seconds", float, "cap on the wall time of one estimate (default 1800; reaching "
                    "it gives a warning)"),
    "draws": ("draws", int, "fix the length instead: kept draws per chain (burn-in 200 unless given)"),
    "burnin": ("burnin", int, "fix the length instead: steps discarded per chain before the draws "
               "(draws 200 unless given)"),
    "thin": ("thin", int, "keep every THIN-th step after burn-in (default 1)"),
    "step_size": ("step_size", float, "SGLD step ε (default: calibrated for this model and data)"),
    "localization": ("localization", float, "γ, pull towards the trained weights (default: set from the curvature, nβ·h_top/1000 within [3, 10])"),
    "nbeta": ("nbeta", float, "inverse temperature times n (default n / log n, n = dataset size)"),
    "batch_size": ("batch_size", int, "minibatch size of each SGLD step (default 256)"),
    "seed": ("seed", int, "random seed (default 0)"),
    "weight_decay": ("weight_decay", float, "Gaussian prior (wd/2)‖w‖² in the potential (default 0)"),
    "chains_per_pass": ("chains_per_pass", int, "chains stepped together per forward+backward pass "
                        "(default: all that fit in half of the free memory, or one when that times faster)"),
    "bias_correction": ("bias_correction", _on_off, "on: subtract the step's predicted bias from λ̂; "
                        "off: λ̂ as sampled (default on)"),
    "compile_gradients": ("compile_gradients", _on_off, "on: compile the gradient (torch's inductor) once "
                          "the audit has sampled ~10 s (same λ̂ up to rounding); off: never (default on)"),
    "remove_slope": ("remove_slope", _on_off, "on: sample the loss less its tangent plane at w*, so a "
                     "gradient there (a checkpoint short of a minimum) does not pull the chains off w*; "
                     "off: the loss as it is, as devinterp samples it, the slope's part of λ̂ measured "
                     "(default off)"),
    "precondition": ("precondition", str, "kronecker: sample with a preconditioner re-estimated as the "
                     "chains stiffen, each weight matrix moving in the eigenbasis of its gradients' row "
                     "and column moments, the other parameters per coordinate (runs that choose their "
                     "length, calibrated step); diagonal: per coordinate throughout; none: without "
                     "(default kronecker)"),
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except PlatformNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
    except Interrupted as exc:
        print(str(exc), file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before a job started (or after it ended): nothing is left behind
        print("\ninterrupted", file=sys.stderr)
        return 130
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    return 1


# -- commands -----------------------------------------------------------------------------

def _client(args: argparse.Namespace) -> Client:
    """A client as the flags say; each TLS flag falls back to its LAMBDASCOPE_TLS_* variable."""
    files = {name: getattr(args, name) or os.environ.get(var, "")
             for name, var in tls.ENV.items()}
    return Client(args.server, data_dir=args.data_dir, api_key=args.api_key,
                  tls=tls.ClientTLS.from_files(**files))


def _with_client(cmd: Callable[[argparse.Namespace, Client], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with _client(args) as client:
            return cmd(args, client)

    return run


def cmd_up(args: argparse.Namespace) -> int:
    platform = LocalPlatform(args.data_dir, host=args.host)
    endpoints = platform.start()
    discovery.record(platform.data_dir, endpoints)
    for name, address in endpoints.items():
        print(f"{name:<10} {address}  (metrics http://{platform.metrics[name]}/metrics)",
              flush=True)
    print(f"data in {platform.data_dir}; Ctrl-C stops the platform", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            dead = [n for n, p in platform.procs.items() if p.poll() is not None]
            if dead:
                print(f"error: {', '.join(dead)} stopped; see {platform.data_dir}/logs",
                      file=sys.stderr)
                return 1
    finally:
        platform.stop()
        discovery.forget(platform.data_dir)
    print("stopped", flush=True)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Everything checkable here (flags, files, formats, shapes, their fit) is checked before a
    byte is uploaded; a file already registered with the same bytes is reused, not uploaded again."""
    config = audit_config(args)
    local_model = _local_model(args)
    local_data = _local_data(args.data) if args.data else None
    with _client(args) as client:
        client.check_audit(config)
        if local_model is not None:
            versions = [local_model]
        elif args.training_job:
            ids = list(client.get_job(args.training_job).output_ids)
            if not ids:
                raise ValueError(f"training job {args.training_job} registered no checkpoints")
            versions = [client.get_model_version(v) for v in ids]
        else:
            versions = [client.get_model_version(v) for v in args.model_version]
        if local_data is not None:
            dataset = local_data
        elif args.dataset:
            dataset = client.get_dataset(args.dataset)
        else:  # the data the (first) version was trained on, from its lineage
            if not versions[0].lineage.dataset_version_id:
                raise ValueError("the model version records no training dataset: pass --data "
                                 "or --dataset")
            dataset = client.get_dataset(versions[0].lineage.dataset_version_id)
        for version in versions:
            fit.check_fit(version, dataset, config.loss)
        if local_model is not None:
            version_ids = [_upload_model(client, args, local_model).id]
        else:
            version_ids = [v.id for v in versions]
        dataset_id = _upload_data(client, args.data).id if local_data is not None else dataset.id
        job = client.start_audit(version_ids, dataset_id, config)
        job = _follow(client, job, "audit")
        if job.state != jobs_pb2.JOB_STATE_SUCCEEDED:
            return 1
        reports = [client.get_report(r) for r in job.output_ids]
    _show(args, reports, versions)
    return 3 if _failed(reports) else 0


def _failed(reports: list[audit_pb2.AuditReport]) -> bool:
    """One audit: its verdict failed. LLC over training: a point at a minimum failed, or no point
    is at one (checkpoints taken before the model reached a minimum are expected, not failures)."""
    at_minimum = [r for r in reports if not r.verdict.not_at_minimum]
    if len(reports) > 1 and not at_minimum:
        return True
    return any(r.verdict.state == audit_pb2.VERDICT_STATE_FAILED for r in (at_minimum if len(reports) > 1 else reports))


def _existing(path: str, flag: str) -> pathlib.Path:
    file = pathlib.Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"{flag} {path}: no such file")
    return file


def _local_model(args: argparse.Namespace) -> registry_pb2.ModelVersion | None:
    """The --model file as the registry would record it (read from its bytes, nothing run)."""
    if not args.model:
        if args.architecture:
            raise ValueError("--architecture describes the safetensors weights given with --model")
        return None
    path = _existing(args.model, "--model")
    architecture = _architecture(args.architecture) if args.architecture else None
    format = models_pb2.ARTIFACT_FORMAT_TORCH_EXPORT if path.suffix == ".pt2" else models_pb2.ARTIFACT_FORMAT_SAFETENSORS
    if format == models_pb2.ARTIFACT_FORMAT_TORCH_EXPORT and architecture is not None:
        raise ValueError("--architecture is for safetensors weights; a .pt2 archive carries its own program")
    if format == models_pb2.ARTIFACT_FORMAT_SAFETENSORS and architecture is None:
        raise ValueError(f"--model {path}: safetensors weights need --architecture (a built-in architecture "
                         "as JSON, e.g. '{\"mlp\": {\"widths\": [64, 32, 10]}}', or a .json/.yaml file); "
                         "a torch.export archive must end in .pt2")
    try:
        version = inspection.describe_model(path, format, architecture)
    except ValueError as exc:
        raise ValueError(f"--model {path}: {exc}") from None
    version.model_name = args.name or path.stem
    return version


def _local_data(path: str) -> registry_pb2.Dataset:
    try:
        return inspection.describe_dataset(_existing(path, "--data"))
    except inspection.InvalidArtifact as exc:
        raise ValueError(f"--data {path}: {exc}") from None


def _architecture(text: str) -> models_pb2.Architecture:
    """--architecture: JSON, or a .json/.yaml file, of a lambdascope.v1.Architecture."""
    if text.lstrip().startswith("{"):
        try:
            return json_format.Parse(text, models_pb2.Architecture())
        except json_format.ParseError as exc:
            raise ValueError(f"--architecture: {exc}") from None
    return specs.load(_existing(text, "--architecture"), models_pb2.Architecture())


def _upload_model(client: Client, args: argparse.Namespace, local: registry_pb2.ModelVersion
                  ) -> registry_pb2.ModelVersion:
    architecture = local.architecture if local.HasField("architecture") else None
    version = client.find_model_version(args.model, local.model_name, format=local.format,
                                        architecture=architecture)
    if version is not None:
        _note(f"model   {version.model_name} v{version.version} ({version.id}), already registered")
        return version
    version = client.upload_model(args.model, local.model_name, format=local.format, architecture=architecture)
    _note(f"model   {version.model_name} v{version.version} ({version.id})")
    return version


def _upload_data(client: Client, path: str) -> registry_pb2.Dataset:
    name = pathlib.Path(path).stem
    dataset = client.find_dataset(path, name)
    if dataset is not None:
        _note(f"dataset {dataset.id}, already registered")
        return dataset
    dataset = client.upload_dataset(path, name)
    _note(f"dataset {dataset.id}")
    return dataset


def audit_config(args: argparse.Namespace) -> audit_pb2.AuditConfig:
    config = audit_pb2.AuditConfig(loss=enums.LOSS_KINDS[args.loss], device=args.device or "",
                                   dtype=args.dtype or "", model_targets=args.model_targets)
    for flag, (field, _kind, _help) in SAMPLER_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            setattr(config.sampler, field, value)
    measures = config.measures
    measures.per_layer_llc, measures.hessian = args.per_layer, args.hessian
    measures.weight_statistics = args.weight_stats
    for group in args.group or []:
        name, sep, patterns = group.partition("=")
        if not sep or not name or not patterns:
            raise ValueError(f"--group {group!r}: write NAME=PATTERN[,PATTERN...]")
        measures.groups.add(name=name, patterns=patterns.split(","))
    return config


def cmd_train(args: argparse.Namespace) -> int:
    spec = specs.load(args.spec, trainer_pb2.TrainSpec())
    with _client(args) as client:
        job = client.start_training(spec)
        if args.no_wait:
            print(job.id)
            return 0
        job = _follow(client, job, "train")
        print(f"job {job.id}")  # on stdout whatever the end, for `lambdascope jobs` and scripts
        if job.state != jobs_pb2.JOB_STATE_SUCCEEDED:
            return 1
        for name, value in sorted(job.metrics.items()):
            print(f"{name:<24} {value:.4f}")
        print("checkpoints: " + " ".join(job.output_ids))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from lambdascope.v1 import registry_pb2

    with _client(args) as client:
        if args.name:
            tags = dict(t.split("=", 1) for t in args.tag or [])
            for v in client.search_model_versions(model_name=args.name, tags=tags):
                fmt = models_pb2.ArtifactFormat.Name(v.format).removeprefix("ARTIFACT_FORMAT_")
                labels = " ".join([*(f"@{a}" for a in v.aliases),
                                   *(f"{k}={val}" for k, val in sorted(v.tags.items()))])
                print(f"{v.model_name}\tv{v.version}\t{v.id}\t{fmt.lower()}\t{v.size_bytes} B"
                      f"\tjob={v.lineage.job_id or '-'} step={v.lineage.step}\t{labels}")
        else:
            request = registry_pb2.ListModelsRequest(page_size=1000)
            while True:
                reply = client.registry.ListModels(request)
                for m in reply.models:
                    print(f"{m.name}\t{m.latest_version} version(s)\towner={m.owner}")
                if not reply.next_page_token:
                    break
                request.page_token = reply.next_page_token
    return 0


def cmd_alias(args: argparse.Namespace) -> int:
    """`alias NAME ALIAS VERSION` moves it; `--delete` removes it; `--history` lists its moves."""
    with _client(args) as client:
        if args.history:
            for e in client.alias_history(args.name, args.alias):
                when = e.at.ToDatetime().isoformat(timespec="seconds")
                print(f"{when}\t{e.by}\t{e.from_version_id or '-'} -> {e.to_version_id or '-'}")
        elif args.delete:
            client.delete_alias(args.name, args.alias)
        elif args.version:
            alias = client.set_alias(args.name, args.alias, args.version)
            print(f"{alias.model_name}@{alias.alias} -> v{alias.version} ({alias.version_id})")
        else:
            print(client.get_model_version(f"{args.name}@{args.alias}").id)
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    pairs = dict(t.split("=", 1) for t in args.set or [])
    with _client(args) as client:
        target = {"dataset_id": args.target} if args.target.startswith("ds-") else {
            "version_id": args.target}
        tags = client.set_tags(**target, set=pairs, remove=args.remove or [])
    print(" ".join(f"{k}={v}" for k, v in tags.items()))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    with _client(args) as client:
        freed = (client.delete_dataset(args.target) if args.target.startswith("ds-")
                 else client.delete_model_version(args.target,
                                                  other_teams_reports=args.including_other_teams_reports))
    print(f"deleted {args.target}" + ("" if freed else " (its bytes are shared and stay)"))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.target.startswith("ds-"):
            path = client.download_dataset(args.target, args.dest, via=args.via)
        else:
            path = client.download_model_version(args.target, args.dest, via=args.via)
    print(f"{path} ({path.stat().st_size} bytes, sha256 checked)")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    with _client(args) as client:
        out = client.collect_garbage(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {out.objects_removed} object(s), {out.bytes_freed} bytes, "
          f"{out.staging_removed} abandoned staging upload(s)")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.action == "list":
            kinds = [args.kind] if args.kind else ["train", "audit"]
            print("job\tstate\tcreated\tsubject\tprogress\tresult")
            for kind in kinds:
                for job in client.list_jobs(kind):
                    print(_job_line(job))
        elif args.action == "show":
            print(json.dumps(specs.to_dict(client.get_job(args.job_id)), indent=2))
        elif args.action == "cancel":
            print(_job_line(client.cancel_job(args.job_id)))
        elif args.action == "watch":
            job = _follow(client, client.get_job(args.job_id), args.job_id.split("-")[0])
            return 0 if job.state == jobs_pb2.JOB_STATE_SUCCEEDED else 1
    return 0


def cmd_reports(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print("report\tcreated\tmodel version\tstep\tLLC ± standard error\tverdict\tseconds")
        for r in client.list_reports(args.version or ""):
            print(f"{r.id}\t{_when(r.created_at)}\t{r.model_version_id}\t{r.step}\t"
                  f"{r.llc.mean:.3f} ± {views.stderr(r):.3g}\t{views.verdict(r)}\t{r.timing.seconds:.1f}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print("dataset\tname\tcreated\texamples\tx\ty\tsize")
        for d in client.list_datasets(args.name or ""):
            print(f"{d.id}\t{d.name} v{d.version}\t{_when(d.created_at)}\t{d.num_examples}\t"
                  f"{d.x_dtype}{list(d.x_shape)}\t{d.y_dtype}{list(d.y_shape)}\t{d.size_bytes} B")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Audits side by side; each against the first: the difference, its interval and p-value,
    and warnings where the settings differ so the numbers are not comparable."""
    if len(args.report_ids) < 2:
        raise ValueError("compare needs at least two audit reports")
    with _client(args) as client:
        reports = [client.get_report(r) for r in args.report_ids]
        digests = client.dataset_digests(r.dataset_id for r in reports)
    print("report\tmodel version\tLLC ± standard error\tverdict\tchains\tnβ\tstep\tγ\tdataset")
    for r in reports:
        s = r.config.sampler
        print(f"{r.id}\t{r.model_version_id}\t{r.llc.mean:.3f} ± {views.stderr(r):.3g}\t{views.verdict(r)}\t"
              f"{len(r.llc.per_chain)}\t{s.nbeta:.4g}\t{s.step_size:.3g}\t{s.localization:.3g}\t{r.dataset_id}")
    for comparison in views.compare(reports, digests):
        print(comparison.sentence)
        for warning in comparison.warnings:
            print(f"  warning: {warning}")
    if args.html:
        from lambdascope.reports import html

        _write_page(args, html.compare_page(reports, digests).encode())
    return 0


def _write_page(args: argparse.Namespace, page: bytes) -> None:
    """Write an HTML page to --html, and open it in a browser with --open."""
    path = pathlib.Path(args.html).expanduser()
    path.write_bytes(page)
    _note(f"HTML page written to {path}")
    if getattr(args, "open", False):
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


def cmd_report(args: argparse.Namespace) -> int:
    """One report, or several (the checkpoints of a training run) as a trajectory with its stages."""
    with _client(args) as client:
        reports = sorted((client.get_report(r) for r in args.report_ids), key=lambda r: r.step)
        versions = [client.get_model_version(r.model_version_id) for r in reports] if len(reports) > 1 else []
        stored = b""
        if args.html and len(reports) == 1:
            try:
                stored = client.get_report_page(reports[0].id)
            except grpc.RpcError as exc:  # stored without one (an older estimator): rendered here
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
    _show(args, reports, versions, stored)
    return 0


def _show(args: argparse.Namespace, reports: list[audit_pb2.AuditReport],
          versions: list[registry_pb2.ModelVersion], page: bytes = b"") -> None:
    """Print one report, or a trajectory with its stages; --json and --html write them."""
    if len(reports) == 1:
        _print_report(reports[0])
    else:
        _print_trajectory(reports)
    if args.json:
        body = specs.to_dict(reports[0]) if len(reports) == 1 else {
            "trajectory": [{"model_version_id": r.model_version_id, "step": r.step,
                            "llc_mean": r.llc.mean, "llc_std": r.llc.std, "llc_standard_error": views.stderr(r),
                            "verdict": views.verdict(r), "at_minimum": not r.verdict.not_at_minimum}
                           for r in reports],
            "stages": [{"start_step": st.start, "end_step": st.end, "llc": st.llc, "loss": st.loss,
                        "llc_change": st.llc_change, "label": st.label} for st in views.stages(reports)],
            "reports": [specs.to_dict(r) for r in reports]}
        pathlib.Path(args.json).write_text(json.dumps(body, indent=2))
        _note(f"report written to {args.json}")
    if args.html:
        if not page:
            from lambdascope.reports import html

            if len(reports) == 1:
                page = html.audit_page(reports[0]).encode()
            else:  # the held-out loss the trainer recorded with each checkpoint, when it did
                held_out = {v.id: float(v.metadata["test_loss"]) for v in versions if "test_loss" in v.metadata}
                page = html.trajectory_page(reports, held_out).encode()
        _write_page(args, page)


# -- output -------------------------------------------------------------------------------

def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _state(state: int) -> str:
    return jobs_pb2.JobState.Name(state).removeprefix("JOB_STATE_").lower()


def _when(stamp) -> str:
    """A protobuf Timestamp as local time, to the minute ("-" when unset)."""
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return stamp.ToDatetime().replace(tzinfo=datetime.timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M")


def _job_line(job: jobs_pb2.Job) -> str:
    """id, state, created, what it works on (the audited version(s) or the trained model), progress,
    and its result (λ̂ of an audit, the final loss of a training run) or why it ended."""
    try:
        spec = json.loads(job.spec_json) if job.spec_json else {}
    except ValueError:
        spec = {}
    if job.kind == "audit":
        ids = spec.get("model_version_ids") or [spec.get("model_version_id", "-")]
        subject = ids[0] if len(ids) == 1 else f"{len(ids)} versions from {ids[0]}"
        result = f"LLC {job.metrics['llc']:.3f}" if "llc" in job.metrics else ""
    else:
        subject = spec.get("spec", {}).get("model_name", "-")
        result = f"loss {job.metrics['loss']:.4g}" if "loss" in job.metrics else ""
    if job.message:
        result = f"{result}  {job.message}".strip()
    if job.attempts > 1:
        result += f"  ({job.attempts} attempts)"
    return f"{job.id}\t{_state(job.state)}\t{_when(job.created_at)}\t{subject}\t{job.step}/{job.total}\t{result}"


def _follow(client: Client, job: jobs_pb2.Job, kind: str) -> jobs_pb2.Job:
    """Watch a job with a progress bar; print how it ended."""
    bar = ProgressBar(f"{kind} {job.id}")
    try:
        final = client.wait(job.id, on_event=bar.update)
    except KeyboardInterrupt:
        bar.close()
        raise Interrupted(_after_interrupt(client, job.id)) from None
    bar.close()
    if final.state != jobs_pb2.JOB_STATE_SUCCEEDED:
        _note(f"{kind} {final.id} {_state(final.state)}: {final.message}")
    return final


class Interrupted(Exception):
    """Ctrl-C while following a job; the message says what became of the job."""


def _after_interrupt(client: Client, job_id: str) -> str:
    """Ask whether to cancel the job (a second Ctrl-C, or no terminal to ask on, cancels it):
    a job is left running only when the user says so, and then they are told how to reattach."""
    keep = False
    if sys.stdin.isatty():
        try:
            answer = input(f"\ninterrupted: cancel job {job_id}? [Y/n] (n keeps it running) ")
            keep = answer.strip().lower() in ("n", "no")
        except (KeyboardInterrupt, EOFError):
            keep = False
    if keep:
        return (f"job {job_id} keeps running; follow it again with: lambdascope jobs watch {job_id} "
                f"(or cancel it: lambdascope jobs cancel {job_id})")
    job = client.cancel_job(job_id)
    return f"job {job_id} {_state(job.state)}"


def _print_report(report: audit_pb2.AuditReport) -> None:
    per_chain = ", ".join(f"{v:.2f}" for v in report.llc.per_chain)
    s, d = report.config.sampler, report.diagnostics
    print(f"LLC  {report.llc.mean:.3f} ± {views.stderr(report):.3g}   ({views.uncertainty(report)})")
    print(f"     chains: {per_chain} (spread {report.llc.std:.3g})")
    if report.llc.bias_corrected:
        print(f"     less the step's predicted bias {d.predicted_bias:+.3g} (as sampled "
              f"{report.llc.uncorrected_mean:.3f}; --bias-correction off keeps it)")
    print(f"verdict: {views.verdict(report)}")
    for reason in report.verdict.reasons:
        print(f"  - {reason}")
    print(f"diagnostics: R-hat {d.rhat:.3f}, ESS {d.ess:.0f}, MCSE {100 * d.mcse_relative:.1f}%, "
          f"drift {views.drift(d)}, acceptance {d.acceptance:.3f}, "
          f"draws below L_n(w*) {100 * d.below_init_fraction:.1f}%")
    print(f"slope at w*: {views.slope(report)}")
    if report.loss_description:
        print(f"loss: {report.loss_description}")
    print(f"L_n(w*) {report.init_loss:.5g}   n={report.num_examples}   "
          f"params={report.num_parameters}   nbeta={s.nbeta:.4g}   WBIC {report.wbic:.5g}")
    how = "calibrated" if report.calibration.ran else "given"
    stop = report.stopping
    draws, burnin = (stop.draws, stop.burnin) if report.HasField("stopping") else (s.draws, s.burnin)
    print(f"sampler: {s.chains} chains x {draws} draws (burn-in {burnin}), step {s.step_size:.3g} "
          f"({how}), localization {s.localization:.3g}, batch {s.batch_size}, seed {s.seed}")
    if stop.summary:
        print(f"length: {stop.summary}")
    if report.calibration.summary:
        print(f"calibration: {report.calibration.summary}")
    for group in report.group_llc:
        error = f"± {group.llc.standard_error:.3g} (standard error)" if group.llc.standard_error else ""
        print(f"  LLC[{group.name}] {group.llc.mean:.3f} {error} chains' spread {group.llc.std:.3g} "
              f"({group.num_parameters} params)")
    if report.HasField("hessian"):
        h = report.hessian
        print(f"Hessian: trace {h.trace:.4g} ± {h.trace_stderr:.2g}, top eigenvalue "
              f"{h.top_eigenvalue:.4g}")
    for w in report.weight_statistics:
        print(f"  {w.name:<28} std {w.std:.4g}  kurtosis {w.kurtosis:+.3f}")
    memory = ""
    if report.resources.peak_memory_bytes:
        r = report.resources
        memory = (f", {r.chains_per_pass} chain(s) per pass, peak memory "
                  f"{r.peak_memory_bytes / (1 << 20):,.0f} MiB ({r.peak_memory_kind})")
    if report.resources.compile_summary:
        print(f"gradient: {report.resources.compile_summary}")
    print(f"time {report.timing.seconds:.1f} s (sampling {report.timing.sampling_seconds:.1f} s, "
          f"{report.timing.chain_steps_per_second:.0f} chain-steps/s) on {report.device}{memory}; "
          f"report {report.id}")


def _print_trajectory(reports: list[audit_pb2.AuditReport]) -> None:
    """One line per checkpoint; those not at a minimum say so instead of a λ̂ (it means nothing)."""
    print(f"{'step':>8}  {'LLC':>9}  {'± s.e.':>7}  verdict   version")
    for r in reports:
        if r.verdict.not_at_minimum:
            print(f"{r.step:>8}  {'-':>9}  {'-':>7}  not at a minimum (λ̂ {r.llc.mean:.3g} not meaningful)  "
                  f"{r.model_version_id}")
        else:
            print(f"{r.step:>8}  {r.llc.mean:9.3f}  {views.stderr(r):7.3g}  {views.verdict(r):<8}  "
                  f"{r.model_version_id}")
    early = sum(r.verdict.not_at_minimum for r in reports)
    if early:
        print(f"{early} of {len(reports)} checkpoints were not at a minimum of the loss (taken before training "
              "converged): their λ̂ is left out of the trajectory")
    for st in views.stages(reports):
        print(f"stage  steps {st.start}-{st.end}: {st.label} (λ̂ {st.llc_change:+.3g})")


# -- arguments ----------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lambdascope", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        if name != "up":
            p.add_argument("--server", metavar="HOST:PORT",
                           help="any lambdascope service (default: the platform `up` runs here)")
            p.add_argument("--data-dir", metavar="DIR",
                           help="the platform `lambdascope up --data-dir DIR` runs, when several run "
                                "(default: LAMBDASCOPE_DATA_DIR, else the only one)")
            p.add_argument("--ca", metavar="PEM",
                           help="the CA that signed the servers' TLS certificates (default: "
                                "LAMBDASCOPE_TLS_CA; none: plaintext)")
            p.add_argument("--cert", metavar="PEM",
                           help="a client certificate, for servers that require one (mutual TLS; "
                                "default: LAMBDASCOPE_TLS_CLIENT_CERT)")
            p.add_argument("--key", metavar="PEM",
                           help="the client certificate's key (default: LAMBDASCOPE_TLS_CLIENT_KEY)")
            p.add_argument("--api-key", metavar="KEY",
                           help="the API key to send (default: LAMBDASCOPE_API_KEY, else the admin "
                                "key of the platform `lambdascope up` runs here)")
        return p

    up = command("up", cmd_up, "start the platform locally and keep it running")
    up.add_argument("--data-dir", default="~/.lambdascope/data",
                    help="embedded storage (SQLite + objects)")
    up.add_argument("--host", default="127.0.0.1")

    audit = command("audit", cmd_audit, "estimate the LLC of a model on a dataset")
    model = audit.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", metavar="FILE", help="a torch.export archive (.pt2), or safetensors weights "
                       "of a built-in --architecture, to upload (reused if already registered)")
    model.add_argument("--model-version", metavar="ID", nargs="+",
                       help="registered model version(s); several give LLC over training")
    model.add_argument("--training-job", metavar="JOB_ID",
                       help="every checkpoint of a training run (LLC over training)")
    data = audit.add_mutually_exclusive_group()
    data.add_argument("--data", metavar="FILE", help="safetensors with tensors x and y")
    data.add_argument("--dataset", metavar="ID", help="a registered dataset")
    audit.add_argument("--loss", choices=sorted(enums.LOSS_KINDS), required=True)
    audit.add_argument("--name", help="registry model name (default: the file's stem)")
    audit.add_argument("--architecture", metavar="JSON|FILE",
                       help="the built-in architecture of safetensors --model weights, as JSON "
                            "(e.g. '{\"mlp\": {\"widths\": [64, 32, 10]}}') or a .json/.yaml file")
    sampler = audit.add_argument_group(
        "sampler", "By default an audit runs until its diagnostics say it can be trusted (or a cap); "
        "--draws/--burnin fix its length instead.")
    for flag, (_field, kind, text) in SAMPLER_FLAGS.items():
        sampler.add_argument("--" + flag.replace("_", "-"), dest=flag, type=kind, help=text,
                             metavar=flag.upper())
    audit.add_argument("--device", help="cpu, cuda, cuda:N (default: automatic)")
    audit.add_argument("--dtype", choices=["float32", "float64"])
    audit.add_argument("--model-targets", action="store_true",
                       help="audit against the model's own outputs instead of the data's targets (mse, mae): "
                            "every checkpoint is then a minimum, so LLC over training also reads checkpoints "
                            "taken before training converged")
    audit.add_argument("--per-layer", action="store_true", help="restricted LLC of each layer")
    audit.add_argument("--group", action="append", metavar="NAME=PATTERN[,PATTERN]",
                       help="restricted LLC of the parameters matching the patterns")
    audit.add_argument("--hessian", action="store_true", help="Hessian trace and top eigenvalue")
    audit.add_argument("--weight-stats", action="store_true", help="per-layer weight statistics")
    audit.add_argument("--json", metavar="OUT.json", help="write the full report as JSON")
    audit.add_argument("--html", metavar="OUT.html", help="write the report's HTML page (LLC over training: the "
                       "trajectory's page)")
    audit.add_argument("--open", action="store_true", help="open the --html page in a browser")

    train = command("train", cmd_train, "train a model from a spec (YAML or JSON TrainSpec)")
    train.add_argument("spec")
    train.add_argument("--no-wait", action="store_true", help="print the job id and return")

    models = command("models", cmd_models, "list models, or the versions of one")
    models.add_argument("name", nargs="?")
    models.add_argument("--tag", action="append", metavar="KEY=VALUE",
                        help="only versions with this tag")

    alias = command("alias", cmd_alias,
                    "show, move or delete NAME@ALIAS (versions: id, NAME/N, NAME/latest)")
    alias.add_argument("name")
    alias.add_argument("alias")
    alias.add_argument("version", nargs="?", help="point the alias here")
    alias.add_argument("--delete", action="store_true")
    alias.add_argument("--history", action="store_true", help="every move, oldest first")

    tag = command("tag", cmd_tag, "set or remove tags on a model version or dataset (ds-...)")
    tag.add_argument("target")
    tag.add_argument("--set", action="append", metavar="KEY=VALUE")
    tag.add_argument("--remove", action="append", metavar="KEY")

    rm = command("rm", cmd_rm, "delete a model version (or a dataset, ds-...)")
    rm.add_argument("target")
    rm.add_argument("--including-other-teams-reports", action="store_true",
                    help="a version shared with other teams: delete their audit reports of it too "
                         "(refused without this while there are any)")

    download = command("download", cmd_download,
                       "write a model version's artifact (id, NAME/N, NAME@ALIAS) or a dataset "
                       "(ds-...) to a file")
    download.add_argument("target")
    download.add_argument("dest")
    download.add_argument("--via", choices=["auto", "stream", "url"], default="auto",
                          help="auto: a presigned S3 URL when there is one and it answers, else "
                               "the registry's stream")

    gc = command("gc", cmd_gc, "remove unreferenced stored bytes and abandoned uploads")
    gc.add_argument("--dry-run", action="store_true")

    jobs = command("jobs", cmd_jobs, "list, show, watch or cancel jobs")
    jobs.add_argument("action", nargs="?", default="list",
                      choices=["list", "show", "watch", "cancel"])
    jobs.add_argument("job_id", nargs="?")
    jobs.add_argument("--kind", choices=["train", "audit"])

    reports = command("reports", cmd_reports, "list audit reports, all or those of one model version")
    reports.add_argument("version", nargs="?", help="a model version: an id, NAME/N, NAME/latest or NAME@ALIAS")
    datasets = command("datasets", cmd_datasets, "list registered datasets")
    datasets.add_argument("name", nargs="?", help="only the versions uploaded under this name")
    compare = command("compare", cmd_compare, "compare audits: differences beyond the estimator's noise, "
                      "and settings that make them incomparable")
    compare.add_argument("report_ids", nargs="+", metavar="REPORT_ID", help="two or more audit reports")
    compare.add_argument("--html", metavar="OUT.html", help="also write the comparison as an HTML page")
    compare.add_argument("--open", action="store_true", help="open the --html page in a browser")
    report = command("report", cmd_report, "print an audit report, or several as LLC over training with its stages")
    report.add_argument("report_ids", nargs="+", metavar="REPORT_ID")
    report.add_argument("--json", metavar="OUT.json")
    report.add_argument("--html", metavar="OUT.html", help="write the report's HTML page (self-contained: plots "
                        "inline, nothing fetched); for several reports, the trajectory's page")
    report.add_argument("--open", action="store_true", help="open the --html page in a browser")
    cli_admin.add_commands(command, _with_client)
    return parser


if __name__ == "__main__":
    sys.exit(main())
