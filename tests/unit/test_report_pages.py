"""Audit reports people read: the HTML pages (self-contained, escaped), the notebook SDK's
frames and figures, on reports made by the estimator's own code path (tests/report_samples.py)."""
from __future__ import annotations

import base64
import math
import re
import subprocess
import sys

import pytest
from matplotlib.figure import Figure

import lambdascope
from lambdascope.reports import html, plots, views
from tests import report_samples as samples

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOSTILE = '<script>alert("x")</script><img src="http://evil.example/x.png">'


@pytest.fixture(scope="module")
def report():
    return samples.audited()


def _images(page: str) -> list[bytes]:
    sources = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert all(s.startswith("data:image/png;base64,") for s in sources), sources
    return [base64.b64decode(s.split(",", 1)[1]) for s in sources]


def _references(page: str) -> list[str]:
    """Every URL the page would fetch or link to, other than inline data."""
    urls = re.findall(r'(?:src|href|action|poster)\s*=\s*"([^"]*)"', page, flags=re.IGNORECASE)
    urls += re.findall(r"url\(([^)]*)\)", page)
    return [u for u in urls if not u.startswith("data:")]


def test_the_audit_page_holds_every_plot_inline_and_fetches_nothing(report):
    page = html.audit_page(report)
    images = _images(page)
    assert len(images) == len(plots.audit_figures(report)) == 5  # traces, running, chains, calibration, groups
    assert all(i.startswith(PNG_MAGIC) and len(i) > 5000 for i in images)
    assert f'content="{html.CSP}"' in page and "default-src 'none'" in html.CSP
    assert _references(page) == [] and "<script" not in page
    # the verdict and its reasons come first, then the numbers a reader checks
    assert page.index("verdict: ok") < page.index("<img")
    for text in ("R-hat", "bulk ESS", "Monte Carlo error", "Step-size calibration", "λ per layer".replace("λ", "λ̂"),
                 "Configuration (as resolved)", "chains per pass", f"{report.llc.mean:.4g}"):
        assert text in page, text


def test_text_from_users_is_escaped(report):
    hostile = samples.variant(report, model_version_id=HOSTILE, dataset_id=HOSTILE, id=HOSTILE)
    hostile.verdict.reasons.append(HOSTILE)
    hostile.group_llc[0].name = "layer $\\undefinedmacro$"  # text for matplotlib, not mathematics (which fails)
    for page in (html.audit_page(hostile), html.compare_page([report, hostile]),
                 html.trajectory_page([samples.variant(hostile, step=s) for s in (10, 20, 40)])):
        assert "<script" not in page and "evil.example/x.png\"" not in page
        assert "&lt;script&gt;" in page
        assert _references(page) == []


def test_a_report_without_optional_parts_renders(report):
    bare = samples.variant(report)
    bare.ClearField("calibration")
    del bare.group_llc[:]
    page = html.audit_page(bare)
    assert len(_images(page)) == 3
    assert "no calibration" in page


def test_a_report_stored_before_the_slope_was_measured_says_so_not_zero(report):
    """Reports written before audits measured w*'s slope hold neither field: their page and the
    SDK must not read that as an exact minimum (0), which a report that measured it can hold."""
    old = samples.variant(report)
    old.diagnostics.ClearField("gradient_norm")
    old.diagnostics.ClearField("slope_term")
    old = type(old).FromString(old.SerializeToString())  # as read back from storage
    assert views.slope(old) == "not measured (the report predates it)"
    assert "not measured (the report predates it)" in html.audit_page(old)
    assert math.isnan(lambdascope.result_of(old).diagnostics["gradient_norm"])
    assert math.isnan(lambdascope.result_of(old).diagnostics["slope_term"])

    exact = samples.variant(report)
    exact.diagnostics.gradient_norm = 0.0
    exact.diagnostics.slope_term = 0.0
    exact = type(exact).FromString(exact.SerializeToString())
    assert views.slope(exact).startswith("|∇L_n(w*)| 0, its part of λ̂ +0")
    assert lambdascope.result_of(exact).diagnostics["gradient_norm"] == 0.0


def test_the_trajectory_page_shows_stages(report):
    se = views.stderr(report)  # steps of ~8 standard errors are stages, a few hundredths of one are not
    shifts = [se * k for k in (0, 0.02, 0, 8, 16, 16.05, 16.02, 16)]
    reports = [samples.variant(report, id=f"rep-{i}", step=10 * 2**i, llc_shift=s) for i, s in enumerate(shifts)]
    reports.insert(0, samples.variant(report, id="rep-early", step=5, not_at_minimum=True))
    page = html.trajectory_page(reports)
    assert len(_images(page)) == 1
    found = views.stages(reports)
    assert [st.llc for st in found] == ["flat", "up", "flat"]
    assert "λ̂ up, loss flat" in page and "not at a minimum" in page


def test_the_compare_page_states_the_test_and_warns_on_different_settings(report):
    shift = 5 * views.stderr(report)  # beyond the chains' spread and both audits' standard errors
    page = html.compare_page([report, samples.variant(report, id="rep-b", llc_shift=shift),
                              samples.variant(report, id="rep-c", nbeta=10.0)])
    assert len(_images(page)) == 1
    assert "rep-b vs rep-sample" in page and "larger than the estimator&#x27;s noise" in page
    assert "permutation p = 0.029" in page  # 4 chains a side, every chain shifted: the exact smallest p
    assert "not comparable:</strong> different nβ" in page


def test_the_sdk_gives_frames_figures_and_a_notebook_view(report):
    result = lambdascope.result_of(report)
    frame = result.to_frame()
    assert list(frame.columns) == ["step", "chain", "loss", "energy", "kept"]
    assert len(frame) == sum(len(t.loss) for t in report.traces)
    # the kept rows' mean energy is λ̂ as sampled: the frame holds the numbers the estimate used
    assert frame[frame.kept].energy.mean() == pytest.approx(report.llc.uncorrected_mean, rel=1e-9)
    for which in ("traces", "running", "chains", "calibration", "groups"):
        assert isinstance(result.plot(which), Figure)
    with pytest.raises(ValueError, match="which must be one of"):
        result.plot("nope")
    view = result._repr_html_()
    assert "verdict: ok" in view and len(_images(view)) == 2
    assert result.html().startswith("<!DOCTYPE html>")


def test_the_sdk_trajectory_orders_checkpoints_and_labels_stages(report):
    se = views.stderr(report)
    shifts = [se * k for k in (0, 0.02, 0, 8, 16, 16.05, 16.02, 16)]
    reports = [samples.variant(report, id=f"rep-{i}", step=10 * 2**i, llc_shift=s) for i, s in enumerate(shifts)]
    traj = lambdascope.trajectory(list(reversed(reports)))
    frame = traj.to_frame()
    assert list(frame.step) == sorted(frame.step)
    assert list(frame.stage[:3]) == ["λ̂ flat, loss flat"] * 3
    assert frame.llc_stderr.iloc[0] == report.llc.standard_error >= report.llc.std / 2
    assert isinstance(traj.plot(), Figure)
    assert "λ̂ up, loss flat" in traj._repr_html_()


def test_the_trajectory_page_shows_the_held_out_loss_when_known(report):
    reports = [samples.variant(report, id=f"rep-{i}", step=10 * 2**i, model_version_id=f"mv-{i}") for i in range(3)]
    page = html.trajectory_page(reports, {"mv-0": 0.123456, "mv-2": 0.0654321})
    assert "0.12346" in page and "0.065432" in page and page.count("<img") == 1


def test_every_page_the_renderer_writes_passes_the_registrys_check(report):
    from lambdascope.reports import page_check

    for page in (html.audit_page(report), html.trajectory_page([report, report]),
                 html.compare_page([report, report]), html.audit_page(samples.variant(report, id=HOSTILE))):
        page_check.check_page(page.encode())


@pytest.mark.parametrize("hostile", [
    "<script>alert(1)</script>", '<img src="http://evil.example/x.png">', '<img src="data:image/svg+xml,<svg/>">',
    '<p onclick="x()">', '<a href="javascript:x()">x</a>', "<iframe></iframe>", "<object></object>",
    '<meta http-equiv="refresh" content="0;url=http://evil.example">', "<style>@import 'http://evil.example';</style>",
    "<style>body { background: url(http://evil.example) }</style>", '<div style="background:url(x)">',
    "<![CDATA[x]]>", "<?php x ?>", '<base href="http://evil.example/">', "<form></form>",
])
def test_the_check_refuses_what_runs_or_fetches(report, hostile):
    from lambdascope.reports import page_check

    page = html.audit_page(report).replace("<body>", "<body>" + hostile, 1)
    with pytest.raises(page_check.PageRefused):
        page_check.check_page(page.encode())


def test_the_check_wants_lambdascopes_policy_and_utf8(report):
    from lambdascope.reports import CSP, page_check

    page = html.audit_page(report)
    for changed in (page.replace(CSP, "default-src *"), page.replace('http-equiv="Content-Security-Policy"', "")):
        with pytest.raises(page_check.PageRefused):
            page_check.check_page(changed.encode())
    with pytest.raises(page_check.PageRefused):
        page_check.check_page(b"\xff\xfe<html>")
    page_check.check_page(b"")  # no page: nothing to check


def test_the_estimator_worker_starts_without_matplotlib() -> None:
    """matplotlib was 0.9 s of the worker's 2.7 s import, paid by every pod at start: the page
    renderer is imported when the first page is drawn."""
    code = ("import services.estimator.worker, sys; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib loaded at import'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
