"""lambdascope.audit refuses careless input before it contacts any server (no server runs here:
each of these must fail before the SDK looks for one)."""
from __future__ import annotations

import pytest
import torch

import lambdascope
from lambdascope.sdk import result_of
from lambdascope.v1 import audit_pb2


@pytest.fixture
def model_and_data():
    return torch.nn.Linear(3, 1).eval(), torch.randn(32, 3), torch.randn(32, 1)


@pytest.mark.parametrize(("change", "says"), [
    (lambda m, x, y: dict(model=m.train()), "call model.eval()"),
    (lambda m, x, y: dict(loss="ce"), "loss must be one of cross_entropy, mae, mse"),
    (lambda m, x, y: dict(sampler={"chain": 4}), "sampler has no field 'chain'"),
    (lambda m, x, y: dict(sampler={"chains": "four"}), "sampler.chains"),
    (lambda m, x, y: dict(y=y[:10]), "as many examples"),
    (lambda m, x, y: dict(x=torch.randn(32, 5)), "cannot take x of shape [32, 5]"),
    (lambda m, x, y: dict(model="{pt2}", x=torch.randn(32, 5)), "dataset x has shape [32, 5]"),
    (lambda m, x, y: dict(model="/no/such/model.pt2"), "no such file"),
    (lambda m, x, y: dict(y=torch.randint(0, 2, (32, 1))), "floating-point targets"),
])
def test_careless_input_is_refused_before_any_server_is_needed(model_and_data, change, says, tmp_path) -> None:
    model, x, y = model_and_data
    kwargs = dict(model=model, x=x, y=y, loss="mse", server="127.0.0.1:9")  # nothing listens there
    kwargs.update(change(model, x, y))
    if kwargs["model"] == "{pt2}":  # an exported archive, checked against the data without torch running it
        kwargs["model"] = tmp_path / "linear.pt2"
        torch.export.save(torch.export.export(model, (x[:2],), dynamic_shapes=({0: torch.export.Dim("b")},)),
                          kwargs["model"])
    with pytest.raises(ValueError) as info:
        lambdascope.audit(kwargs.pop("model"), kwargs.pop("x"), kwargs.pop("y"), **kwargs)
    assert says in str(info.value)


def test_a_report_reads_as_a_typed_result_with_names() -> None:
    report = audit_pb2.AuditReport(
        id="rep-1", llc=audit_pb2.LLCEstimate(mean=2.5, std=0.1, per_chain=[2.4, 2.6], uncorrected_mean=2.55,
                                              bias_corrected=True),
        verdict=audit_pb2.Verdict(state=audit_pb2.VERDICT_STATE_WARNING, reasons=["capped"]),
        stopping=audit_pb2.Stopping(reason=audit_pb2.STOP_REASON_STEP_CAP),
        group_llc=[audit_pb2.GroupLLC(name="layer0", llc=audit_pb2.LLCEstimate(mean=1.0))])
    result = result_of(report)
    assert (result.llc, result.verdict, result.stopped_by, result.ok) == (2.5, "warning", "step_cap", False)
    assert result.estimate.per_chain == [2.4, 2.6] and result.groups["layer0"].mean == 1.0
    data = result.to_dict()
    assert data["verdict"] == "warning" and data["report"]["verdict"]["state"] == "VERDICT_STATE_WARNING"
    assert data["estimate"]["uncorrected_mean"] == 2.55


def test_in_process_estimate_from_a_dataloader_takes_its_batch_size() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 3, generator=gen, dtype=torch.float64)
    y = x @ torch.tensor([[1.0], [-1.0], [2.0]], dtype=torch.float64)
    model = torch.nn.Linear(3, 1, bias=False).double().eval()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0, 2.0]]))
    loader = DataLoader(TensorDataset(x, y), batch_size=50, shuffle=True)
    local = lambdascope.estimate_llc(model, loader, loss="mse", chains=2, draws=50, burnin=20, step_size=1e-5)
    assert local.result.num_examples == 300 and local.num_parameters == 3
    assert local.result.traces and len(local.result.traces[0]) == 70  # burn-in + draws, fixed length
    assert local.stopped_by == "fixed" and local.llc > 0 and local.to_dict()["verdict"] == local.verdict


@pytest.mark.parametrize(("call", "says"), [
    (lambda m, x, y: lambdascope.estimate_llc(m.train(), x, y), "call model.eval()"),
    (lambda m, x, y: lambdascope.estimate_llc(m, x, y, loss="hinge"), "loss must be one of"),
    (lambda m, x, y: lambdascope.estimate_llc(m, x, y, chain=3), "unknown setting(s) chain"),
    (lambda m, x, y: lambdascope.estimate_llc(m, x, y[:5]), "as many examples"),
    (lambda m, x, y: lambdascope.estimate_llc(m, [(x, y, y)]), "not an (x, y) pair"),
    (lambda m, x, y: lambdascope.estimate_llc(m, x, y, chains=0), "chains must be >= 1"),
])
def test_in_process_estimate_refuses_careless_input(model_and_data, call, says) -> None:
    model, x, y = model_and_data
    with pytest.raises(ValueError) as info:
        call(model, x, y)
    assert says in str(info.value)
