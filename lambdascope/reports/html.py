"""Audit reports as self-contained HTML pages: one file, plots inline as PNG data, no script,
nothing fetched (the page's Content-Security-Policy allows images from ``data:`` only), every
text from a report escaped (model names and reasons come from users).

Three pages: one audit (:func:`audit_page`, rendered by the estimator and stored beside the
report), LLC over training (:func:`trajectory_page`) and a comparison (:func:`compare_page`).
"""
from __future__ import annotations

import base64
import datetime
import html
import json
from collections.abc import Mapping

from matplotlib.figure import Figure

from lambdascope import specs
from lambdascope.reports import CSP, plots, views
from lambdascope.v1 import audit_pb2

__all__ = ["CSP", "audit_page", "audit_summary", "compare_page", "trajectory_page", "trajectory_summary"]

VERDICT_COLOURS = {"ok": "#1e7b34", "warning": "#a36a00", "failed": "#b00020"}

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.8em; }
.verdict { padding: 0.8em 1em; border-left: 6px solid; background: #f6f6f6; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 2px 10px; text-align: left; }
th { background: #eee; } tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; } img { max-width: 100%; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 12px; }
.muted { color: #666; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, body: list[str]) -> str:
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>", *body,
        f'<p class="muted">lambdascope, rendered {_e(_now())}</p>', "</body></html>"])


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _figure(caption: str, figure: Figure) -> str:
    data = base64.b64encode(plots.png(figure)).decode("ascii")
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _table(rows: list[tuple[object, ...]], head: tuple[str, ...] | None = None) -> str:
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>")
    out += ["<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows]
    return "".join(out) + "</table>"


def _verdict_box(report: audit_pb2.AuditReport) -> str:
    state = views.verdict(report)
    reasons = "".join(f"<li>{_e(r)}</li>" for r in report.verdict.reasons)
    llc = report.llc
    corrected = (f" (as sampled {llc.uncorrected_mean:.4g}, less the step's predicted bias "
                 f"{report.diagnostics.predicted_bias:+.3g})" if llc.bias_corrected else "")
    return (f'<div class="verdict" style="border-color:{VERDICT_COLOURS.get(state, "#888")}">'
            f'<strong style="color:{VERDICT_COLOURS.get(state, "#888")}">verdict: {_e(state)}</strong>'
            f"<p>λ̂ = <strong>{llc.mean:.4g} ± {views.stderr(report):.2g}</strong> ({_e(views.uncertainty(report))})"
            f"{_e(corrected)}; {len(llc.per_chain)} chains: {_e(', '.join(f'{v:.4g}' for v in llc.per_chain))} "
            f"(spread {llc.std:.2g})</p>"
            + (f"<ul>{reasons}</ul>" if reasons else "<p>No reservations: every check passed.</p>") + "</div>")


def _fmt(value: float, spec: str) -> str:
    return format(value, spec) if value == value else "n/a"


def audit_page(report: audit_pb2.AuditReport) -> str:
    """One audit: the verdict and its reasons first, then the plots, diagnostics, calibration,
    per-group λ̂, Hessian and weight statistics when measured, the configuration and timings."""
    d, s, t = report.diagnostics, report.config.sampler, report.timing
    body = [f"<h1>Audit {_e(report.id or 'of ' + report.model_version_id)}</h1>",
            f'<p class="muted">model version {_e(report.model_version_id)} · dataset {_e(report.dataset_id)} · '
            f"{report.num_parameters:,} parameters · {report.num_examples:,} examples · job {_e(report.job_id)}</p>",
            _verdict_box(report)]
    body.append("<h2>Sampling</h2>")
    body += [_figure("Loss traces per chain", plots.traces(report)),
             _figure("Running λ̂ per chain", plots.running_llc(report)), _figure("λ̂ per chain", plots.chains(report))]
    stop = report.stopping
    body.append(_table([
        ("R-hat (split, rank-normalized)", _fmt(d.rhat, ".3f")), ("bulk ESS", _fmt(d.ess, ".0f")),
        ("Monte Carlo error of λ̂", f"{100 * d.mcse_relative:.2f}%"), ("drift of λ̂", views.drift(d)),
        ("MALA acceptance", _fmt(d.acceptance, ".3f")),
        ("draws below L_n(w*)", f"{100 * d.below_init_fraction:.1f}%"),
        ("slope at w* (its part of λ̂: nβ·∇L_n(w*)·(w − w*) over the draws)", views.slope(report)),
        ("how the length was decided", stop.summary or "fixed length"),
        ("steps per chain (warm-up, burn-in, draws)",
         f"{stop.steps} ({stop.warmup_steps}, {stop.burnin}, {stop.draws})" if stop.steps else f"{s.burnin + s.draws}"),
    ], ("diagnostic", "value")))
    if report.loss_description:
        body.append(f"<p>Loss: {_e(report.loss_description)}</p>")
    if report.config.model_targets:
        body.append("<p>Targets: the model's own outputs on the dataset's inputs (model_targets), so λ̂ is "
                    "that of the function these weights compute.</p>")
    body.append("<h2>Step size</h2>")
    body.append(f"<p>{_e(report.calibration.summary or f'step size {s.step_size:.3g} as given (no calibration)')}</p>")
    calibration = plots.calibration(report)
    if calibration is not None:
        body.append(_figure("Step-size calibration", calibration))
        body.append(_table([(f"{c.step_size:.3g}", _fmt(c.acceptance, ".3f"), _fmt(c.llc, ".4g"),
                             "yes" if c.stable else "no", c.note) for c in report.calibration.candidates],
                           ("step size", "acceptance", "pilot λ̂", "stable", "note")))
    if report.group_llc:
        body.append("<h2>λ̂ per layer or group</h2>")
        body.append(_figure("λ̂ per layer or group", plots.groups(report)))
        body.append(_table([(g.name, g.num_parameters, f"{g.llc.mean:.4g} ± {g.llc.standard_error:.2g}"
                             if g.llc.standard_error else f"{g.llc.mean:.4g}", f"{g.llc.std:.2g}")
                            for g in report.group_llc], ("group", "parameters", "λ̂ ± standard error",
                                                         "chains' spread")))
    if report.HasField("hessian"):
        h = report.hessian
        body.append("<h2>Hessian at w*</h2>")
        body.append(_table([("trace", f"{h.trace:.4g} ± {h.trace_stderr:.2g} ({h.probes} probes)"),
                            ("top eigenvalue", f"{h.top_eigenvalue:.4g} ({h.power_iterations} power iterations)")]))
    if report.weight_statistics:
        body.append("<h2>Weights</h2>")
        body.append(_table([(w.name, w.numel, f"{w.mean:.4g}", f"{w.std:.4g}", f"{w.kurtosis:+.3f}")
                            for w in report.weight_statistics], ("tensor", "size", "mean", "std", "excess kurtosis")))
    r = report.resources
    body.append("<h2>Timings and resources</h2>")
    body.append(_table([
        ("whole audit", f"{t.seconds:.1f} s"), ("loading", f"{t.load_seconds:.1f} s"),
        ("calibration", f"{t.calibration_seconds:.1f} s"), ("sampling", f"{t.sampling_seconds:.1f} s"),
        ("speed", f"{t.chain_steps_per_second:,.0f} chain-steps/s on {report.device}"),
        ("chains per pass", r.chains_summary or "n/a"),
        ("gradient", r.compile_summary or "n/a"),
        ("peak memory", f"{r.peak_memory_bytes / (1 << 20):,.0f} MiB ({r.peak_memory_kind})" if r.peak_memory_bytes
         else "n/a"),
        ("L_n(w*)", f"{report.init_loss:.6g}"), ("WBIC", f"{report.wbic:.6g}"),
    ]))
    body.append("<h2>Configuration (as resolved)</h2>")
    body.append(f"<pre>{_e(json.dumps(specs.to_dict(report.config), indent=2))}</pre>")
    return _page(f"lambdascope audit {report.id or report.model_version_id}", body)


def audit_summary(report: audit_pb2.AuditReport) -> str:
    """A fragment for a notebook cell: the verdict, the traces and the running λ̂."""
    return "".join([f"<div><h3>Audit {_e(report.id or report.model_version_id)}</h3>", _verdict_box(report),
                    _figure("Loss traces per chain", plots.traces(report)),
                    _figure("Running λ̂ per chain", plots.running_llc(report)), "</div>"])


def trajectory_summary(reports: list[audit_pb2.AuditReport]) -> str:
    """A fragment for a notebook cell: the LLC-over-training plot and its stages."""
    found = views.stages(reports)
    rows = [(f"{st.start}–{st.end}", st.label, f"{st.llc_change:+.4g}") for st in found]
    return "".join(["<div>", _figure("LLC over training", plots.trajectory(reports, found)),
                    _table(rows, ("steps", "stage", "λ̂ change")) if rows else "<p>No stages found.</p>", "</div>"])


def trajectory_page(reports: list[audit_pb2.AuditReport], test_loss: dict[str, float] | None = None) -> str:
    """LLC over training: λ̂ against the step with its band, the losses (``test_loss`` by model
    version id, when the checkpoints recorded one), the stages found."""
    found = views.stages(reports)
    test_loss = test_loss or {}
    rows = [(r.step, "not at a minimum" if r.verdict.not_at_minimum
             else f"{r.llc.mean:.4g} ± {views.stderr(r):.2g}",
             f"{r.init_loss:.5g}", f"{test_loss[r.model_version_id]:.5g}" if r.model_version_id in test_loss else "",
             views.verdict(r), r.model_version_id, r.id) for r in reports]
    body = [f"<h1>LLC over training: {len(reports)} checkpoints</h1>",
            _figure("λ̂ against the training step, the losses and the stages found",
                    plots.trajectory(reports, found, test_loss)),
            "<h2>Stages</h2>"]
    if found:
        body.append(_table([(f"{st.start}–{st.end}", st.label, f"{st.llc_change:+.4g}") for st in found],
                           ("steps", "what λ̂ and the loss do", "λ̂ change")))
    else:
        body.append("<p>No stages: fewer than three checkpoints at a minimum, or no training steps recorded.</p>")
    body += ["<h2>Checkpoints</h2>",
             _table(rows, ("step", "λ̂ ± standard error", "training loss", "test loss", "verdict", "model version",
                           "report"))]
    return _page("lambdascope: LLC over training", body)


def compare_page(reports: list[audit_pb2.AuditReport], digests: Mapping[str, str] | None = None) -> str:
    """Audits side by side, each against the first, with the noise test and setting warnings
    (``digests``: dataset id → sha256, see :func:`views.incomparable`)."""
    comparisons = views.compare(reports, digests)
    rows = [(r.id, r.model_version_id, f"{r.llc.mean:.4g} ± {views.stderr(r):.2g}", views.verdict(r),
             len(r.llc.per_chain), f"{r.config.sampler.nbeta:.4g}", f"{r.config.sampler.step_size:.3g}",
             f"{r.config.sampler.localization:.3g}", r.dataset_id) for r in reports]
    body = [f"<h1>Comparison of {len(reports)} audits</h1>", _figure("Audits side by side", plots.compare(reports)),
            _table(rows, ("report", "model version", "λ̂ ± standard error", "verdict", "chains", "nβ", "step", "γ",
                          "dataset")),
            "<h2>Against the first</h2>"]
    for c in comparisons:
        body.append(f"<p>{_e(c.sentence)}</p>")
        if c.warnings:
            body.append("<ul>" + "".join(f"<li><strong>not comparable:</strong> {_e(w)}</li>" for w in c.warnings)
                        + "</ul>")
    return _page("lambdascope: comparison", body)
