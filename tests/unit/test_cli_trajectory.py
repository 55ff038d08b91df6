"""How `lambdascope audit` prints an LLC-over-training trajectory: points before a minimum left
out, the rest read into stages."""
from __future__ import annotations

from lambdascope import cli
from lambdascope.reports import views
from lambdascope.v1 import audit_pb2


def _report(step: int, llc: float, loss: float, *, at_minimum: bool = True) -> audit_pb2.AuditReport:
    state = audit_pb2.VERDICT_STATE_OK if at_minimum else audit_pb2.VERDICT_STATE_FAILED
    return audit_pb2.AuditReport(
        step=step, init_loss=loss, model_version_id=f"mv-{step}",
        llc=audit_pb2.LLCEstimate(mean=llc, std=1.0, per_chain=[llc - 1, llc + 1, llc, llc]),
        verdict=audit_pb2.Verdict(state=state, not_at_minimum=not at_minimum))


def test_the_trajectory_leaves_out_early_points_and_prints_its_stages(capsys) -> None:
    reports = [_report(1, -276.0, 5.0, at_minimum=False)]
    reports += [_report(10 * 2**k, 20.0 if k < 5 else 60.0, 1.0 if k < 5 else 0.2) for k in range(10)]
    cli._print_trajectory(reports)
    out = capsys.readouterr().out
    assert "not at a minimum" in out and "1 of 11 checkpoints" in out
    assert "-276" not in out.split("not at a minimum")[0]  # not printed as an LLC value
    stages = views.stages(reports)
    assert [s.llc for s in stages] == ["flat", "up", "flat"]
    assert stages[1].label == "λ̂ up, loss down" and (stages[1].start, stages[1].end) == (160, 320)
    assert "stage  steps 160-320: λ̂ up, loss down" in out
    assert cli._failed(reports) is False


def test_no_stages_without_training_steps() -> None:
    reports = [_report(0, 10.0, 1.0), _report(0, 11.0, 1.0), _report(0, 12.0, 1.0)]
    assert views.stages(reports) == []
