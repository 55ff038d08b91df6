"""The CLI's audit flags: one per API sampler field and loss kind, and the defaults their help names are the core's."""
from __future__ import annotations

import dataclasses
import re

import pytest

from lambdascope import cli
from lambdascope.v1 import audit_pb2
from lambdascope.llc.llc import SGLDConfig


def test_every_sampler_field_of_the_api_has_a_flag() -> None:
    fields = {f.name for f in audit_pb2.SamplerConfig.DESCRIPTOR.fields}
    assert {field for field, _kind, _help in cli.SAMPLER_FLAGS.values()} == fields


@pytest.mark.parametrize("flag", list(cli.SAMPLER_FLAGS))
def test_a_default_named_in_the_help_is_the_estimators(flag: str) -> None:
    field, kind, text = cli.SAMPLER_FLAGS[flag]
    named = re.search(r"\(default ([0-9.]+)", text)
    if named is None:
        return  # computed defaults (step size, nβ) or none
    default = {f.name: f.default for f in dataclasses.fields(SGLDConfig)}[field]
    assert kind(named.group(1)) == default


def test_no_sampler_flag_leaves_the_length_to_the_stopping_rule() -> None:
    args = cli._parser().parse_args(["audit", "--model", "m.pt2", "--data", "d.safetensors", "--loss", "mse"])
    config = cli.audit_config(args)
    assert not config.sampler.HasField("draws") and not config.sampler.HasField("burnin")
    args = cli._parser().parse_args(["audit", "--model", "m.pt2", "--data", "d.safetensors", "--loss", "mse",
                                     "--until-ess", "300", "--max-steps", "5000", "--max-seconds", "60"])
    sampler = cli.audit_config(args).sampler
    assert (sampler.until_ess, sampler.max_steps, sampler.max_seconds) == (300, 5000, 60)


def test_the_cli_offers_every_loss_the_api_accepts() -> None:
    from lambdascope.v1 import models_pb2

    kinds = {v.number for v in models_pb2.LossKind.DESCRIPTOR.values if v.number != 0}
    for kind in kinds:
        name = models_pb2.LossKind.Name(kind).removeprefix("LOSS_KIND_").lower()
        args = cli._parser().parse_args(["audit", "--model", "m.pt2", "--data", "d.safetensors", "--loss", name])
        assert cli.audit_config(args).loss == kind
