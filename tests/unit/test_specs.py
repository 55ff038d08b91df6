"""Specs as users write them: enum values by the CLI's short names or in full, and reports written
out whole."""
from __future__ import annotations

import json

import pytest

from lambdascope import specs
from lambdascope.v1 import audit_pb2, models_pb2, trainer_pb2


def _load(tmp_path, text: str, suffix: str = ".yaml"):
    path = tmp_path / f"spec{suffix}"
    path.write_text(text)
    return specs.load(path, trainer_pb2.TrainSpec())


def test_short_and_full_enum_names_give_the_same_spec(tmp_path) -> None:
    short = _load(tmp_path, "model_name: m\nloss: cross_entropy\n")
    full = _load(tmp_path, json.dumps({"model_name": "m", "loss": "LOSS_KIND_CROSS_ENTROPY"}), ".json")
    assert short == full and short.loss == models_pb2.LOSS_KIND_CROSS_ENTROPY
    assert _load(tmp_path, "loss: MSE\n").loss == models_pb2.LOSS_KIND_MSE  # any case


def test_an_unknown_enum_name_lists_the_valid_ones(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"loss: 'ce' is not one of cross_entropy, mae, mse"):
        _load(tmp_path, "loss: ce\n")


def test_short_names_follow_the_enum_not_a_list() -> None:
    names = specs.enum_short_names(models_pb2.LossKind.DESCRIPTOR)
    assert names == {v.name.removeprefix("LOSS_KIND_").lower(): v.name
                     for v in models_pb2.LossKind.DESCRIPTOR.values if v.number != 0}


def test_reports_keep_zero_valued_fields_and_name_enums() -> None:
    report = audit_pb2.AuditReport(id="r", verdict=audit_pb2.Verdict(state=audit_pb2.VERDICT_STATE_OK))
    out = specs.to_dict(report)
    assert out["verdict"]["state"] == "VERDICT_STATE_OK"
    assert out["num_parameters"] == "0" and out["wbic"] == 0 and out["traces"] == []


def test_every_loss_kind_has_one_name_and_one_function() -> None:
    from lambdascope import enums
    from lambdascope.llc.losses import LOSSES
    from lambdascope.training.self_modeling import TASK_LOSSES

    kinds = {v.number for v in models_pb2.LossKind.DESCRIPTOR.values if v.number != 0}
    assert set(enums.LOSS_NAMES) == kinds == set(enums.LOSS_KINDS.values())
    # the libraries compute each one, by the same name: audits and training (from the same table)
    assert set(enums.LOSS_KINDS) == set(LOSSES) == set(TASK_LOSSES)


def test_the_library_judges_with_the_verdicts_the_api_reports() -> None:
    from lambdascope import enums, metrics
    from lambdascope.llc.diagnostics import VERDICT_STATES

    states = {v.number for v in audit_pb2.VerdictState.DESCRIPTOR.values if v.number != 0}
    assert set(enums.VERDICT_NAMES) == states and set(enums.VERDICTS) == set(VERDICT_STATES)
    assert set(metrics.VERDICTS) == set(VERDICT_STATES) | {"error"}


def test_error_messages_list_every_valid_value() -> None:
    from lambdascope import enums

    text = enums.one_of(models_pb2.LossKind)
    assert all(name in text for name in ("LOSS_KIND_MSE", "LOSS_KIND_MAE", "LOSS_KIND_CROSS_ENTROPY"))
    assert "UNSPECIFIED" not in text and text.count(" or ") == 1
