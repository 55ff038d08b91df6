"""Figures of audit reports (matplotlib, the field's default for such plots): the HTML pages
embed them as PNGs and the notebook SDK returns them from ``.plot()``.

Every figure is built from the stored report alone (its traces, calibration, groups) on a
``matplotlib.figure.Figure`` of its own: no pyplot state, no display, safe in a server process.
"""
from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure

from lambdascope.llc.stages import Stage
from lambdascope.reports import views
from lambdascope.v1 import audit_pb2

__all__ = ["audit_figures", "calibration", "chains", "compare", "groups", "png", "running_llc", "traces",
           "trajectory"]

WIDTH, HEIGHT, DPI = 7.5, 3.2, 110
STAGE_COLOURS = {"up": "#f4c7a1", "down": "#a9cce3", "flat": "#e5e5e5"}


def _plain(text: str) -> str:
    """A user's name as literal text: matplotlib would read "$...$" as mathematics (and fail on
    an unbalanced one)."""
    return text.replace("$", r"\$")


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _figure(height: float = HEIGHT) -> tuple[Figure, object]:
    figure = Figure(figsize=(WIDTH, height), layout="constrained")
    return figure, figure.add_subplot()


def traces(report: audit_pb2.AuditReport) -> Figure:
    """Per-chain loss traces, as nβ·(L − L_n(w*)), with the warm-up and burn-in marked."""
    figure, ax = _figure()
    steps, energy = views.energy_trace(report)
    warm, burnin = views.warmup_and_burnin(report)
    for c, row in enumerate(energy):
        ax.plot(steps, row, lw=0.6, alpha=0.8, label=f"chain {c}")
    if warm:
        ax.axvspan(0, warm, color="#fde2c8", alpha=0.6, label="warm-up (larger step)")
    if burnin > warm:
        ax.axvspan(warm, burnin, color="#e5e5e5", alpha=0.6, label="burn-in (discarded)")
    ax.axhline(report.llc.uncorrected_mean or report.llc.mean, color="black", lw=1, ls="--",
               label="λ̂ as sampled")
    stride = max(1, report.trace_stride)
    ax.set(xlabel="step" + (f" (means of {stride} steps)" if stride > 1 else ""), ylabel="nβ·(L − L_n(w*))",
           title="Loss traces per chain")
    ax.legend(fontsize=7, ncols=3, loc="upper right")
    return figure


def running_llc(report: audit_pb2.AuditReport) -> Figure:
    """λ̂ of each chain as its kept draws accumulate, against the final estimate and its spread."""
    figure, ax = _figure()
    steps, energy = views.energy_trace(report)
    _warm, burnin = views.warmup_and_burnin(report)
    kept = steps >= burnin
    if kept.any():
        running = np.cumsum(energy[:, kept], axis=1) / np.arange(1, kept.sum() + 1)
        shift = report.llc.mean - (report.llc.uncorrected_mean if report.llc.bias_corrected else report.llc.mean)
        for c, row in enumerate(running):
            ax.plot(steps[kept], row + shift, lw=1, label=f"chain {c}")
    se = views.stderr(report)
    ax.axhspan(report.llc.mean - se, report.llc.mean + se, color="#cccccc", alpha=0.5,
               label="λ̂ ± standard error")
    ax.axhline(report.llc.mean, color="black", lw=1)
    ax.set(xlabel="step", ylabel="running λ̂", title="Running λ̂ per chain (kept draws"
           + (", less the predicted bias)" if report.llc.bias_corrected else ")"))
    ax.legend(fontsize=7, ncols=3, loc="lower right")
    return figure


def chains(report: audit_pb2.AuditReport) -> Figure:
    """Each chain's λ̂ with the mean and its spread."""
    figure, ax = _figure(2.4)
    values = list(report.llc.per_chain)
    ax.axvspan(report.llc.mean - report.llc.std, report.llc.mean + report.llc.std, color="#cccccc", alpha=0.5)
    ax.axvline(report.llc.mean, color="black", lw=1)
    ax.scatter(values, range(len(values)), zorder=3)
    ax.set_yticks(range(len(values)), [f"chain {c}" for c in range(len(values))])
    ax.set(xlabel="λ̂", title=f"λ̂ per chain: mean {report.llc.mean:.4g}, spread {report.llc.std:.2g} (band)")
    return figure


def calibration(report: audit_pb2.AuditReport) -> Figure | None:
    """The calibration pilot: the step sizes tried, their acceptance and pilot λ̂, the chosen one."""
    cal = report.calibration
    if not cal.ran or not cal.candidates:
        return None
    figure, ax = _figure()
    tried = sorted(cal.candidates, key=lambda c: c.step_size)
    eps = np.array([c.step_size for c in tried])
    acc = np.array([c.acceptance for c in tried])
    stable = np.array([c.stable for c in tried])
    ax.scatter(eps[stable], acc[stable], marker="o", label="acceptance (stable)")
    if (~stable).any():
        ax.scatter(eps[~stable], np.nan_to_num(acc[~stable]), marker="x", color="red", label="diverged")
    ax.axvline(cal.chosen_step_size, color="black", ls="--", lw=1, label=f"chosen ε = {cal.chosen_step_size:.3g}")
    ax.set(xscale="log", xlabel="step size ε", ylabel="acceptance", ylim=(-0.02, 1.02), title="Step-size calibration")
    other = ax.twinx()
    llc = np.array([c.llc for c in tried])
    finite = np.isfinite(llc) & stable
    if finite.any():
        other.plot(eps[finite], llc[finite], color="tab:green", marker=".", lw=0.8, label="pilot λ̂")
        other.set_ylabel("pilot λ̂", color="tab:green")
    ax.legend(fontsize=7, loc="lower left")
    return figure


def groups(report: audit_pb2.AuditReport) -> Figure | None:
    """Restricted λ̂ per layer or named group, as bars with the chains' spread."""
    if not report.group_llc:
        return None
    figure, ax = _figure(max(1.6, 0.35 * len(report.group_llc) + 1.0))
    names = [_plain(g.name) for g in report.group_llc]
    errors = [g.llc.standard_error or g.llc.std for g in report.group_llc]
    ax.barh(names, [g.llc.mean for g in report.group_llc], xerr=errors, color="tab:blue", alpha=0.8)
    ax.invert_yaxis()
    ax.set(xlabel="restricted λ̂", title="λ̂ per layer or group (the other parameters held at w*)")
    return figure


def audit_figures(report: audit_pb2.AuditReport) -> list[tuple[str, Figure]]:
    """(caption, figure) for every plot one audit's report has data for."""
    out = [("Loss traces per chain", traces(report)), ("Running λ̂ per chain", running_llc(report)),
           ("λ̂ per chain", chains(report))]
    for caption, make in (("Step-size calibration", calibration), ("λ̂ per layer or group", groups)):
        figure = make(report)
        if figure is not None:
            out.append((caption, figure))
    return out


def trajectory(reports: list[audit_pb2.AuditReport], found: list[Stage] | None = None,
               test_loss: dict[str, float] | None = None) -> Figure:
    """λ̂ against the training step (log axis) with its band, the training loss (and the held-out
    loss, ``test_loss`` by model version id, when known) on a twin axis and the detected stages
    shaded. Checkpoints not at a minimum are drawn hollow, without λ̂."""
    figure, ax = _figure(3.8)
    found = views.stages(reports) if found is None else found
    points = views.trajectory_points(reports)
    for stage in found:
        ax.axvspan(stage.start, stage.end, color=STAGE_COLOURS.get(stage.llc, "#eeeeee"), alpha=0.5, lw=0)
        ax.text((stage.start * stage.end) ** 0.5, 1.0, _plain(stage.label), transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=7)
    steps = np.array([max(r.step, 1) for r in points], dtype=float)
    mean = np.array([r.llc.mean for r in points])
    error = np.array([views.stderr(r) for r in points])
    if len(points):
        ax.fill_between(steps, mean - error, mean + error, color="tab:blue", alpha=0.2, label="± standard error")
        ax.plot(steps, mean, color="tab:blue", marker="o", ms=3, label="λ̂")
    early = [r for r in reports if r.verdict.not_at_minimum]
    loss_ax = ax.twinx()
    loss_ax.plot([max(r.step, 1) for r in reports], [r.init_loss for r in reports], color="tab:red", lw=1,
                 marker=".", ms=3, label="training loss L_n(w)")
    if early:
        loss_ax.scatter([max(r.step, 1) for r in early], [r.init_loss for r in early], facecolors="none",
                        edgecolors="tab:red", s=30, label="not at a minimum (no λ̂)")
    held_out = [(max(r.step, 1), test_loss[r.model_version_id]) for r in reports
                if test_loss and r.model_version_id in test_loss]
    if held_out:
        loss_ax.plot(*zip(*held_out), color="tab:red", lw=1, ls="--", marker="x", ms=3, label="test loss")
    loss_ax.set_ylabel("loss", color="tab:red")
    if len(reports) and min(r.step for r in reports) > 0:
        ax.set_xscale("log")
    ax.set(xlabel="training step", ylabel="λ̂")
    ax.set_title("LLC over training", pad=16)
    handles = ax.get_legend_handles_labels()
    more = loss_ax.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="upper left")
    return figure


def compare(reports: list[audit_pb2.AuditReport]) -> Figure:
    """λ̂ ± standard error of several audits side by side, each chain's λ̂ as a dot."""
    figure, ax = _figure(max(1.8, 0.45 * len(reports) + 1.0))
    labels = [_plain(f"{r.id[:12]}\n{r.model_version_id[:20]}") for r in reports]
    for i, r in enumerate(reports):
        ax.errorbar(r.llc.mean, i, xerr=views.stderr(r), fmt="s", color="black", capsize=4)
        ax.scatter(list(r.llc.per_chain), [i] * len(r.llc.per_chain), color="tab:blue", alpha=0.6, s=14)
    ax.set_yticks(range(len(reports)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="λ̂", title="Audits side by side (square: λ̂ ± standard error; dots: chains)")
    return figure
