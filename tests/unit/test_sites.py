"""sites.intercept / sites.capture: forward hooks on named submodules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lambdascope.training.sites import capture, intercept



def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.ModuleDict(
        {"hidden": nn.Sequential(nn.Linear(3, 4), nn.Identity()), "out": nn.Linear(4, 2)}
    )


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model["out"](model["hidden"](x))


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_intercept_replaces_the_output_that_flows_on():
    model, x = net(), torch.randn(5, 3)
    h = model["hidden"][0](x)
    with intercept(model, {"hidden.1": lambda a: 2 * a}):
        out = forward(model, x)
    assert torch.allclose(out, model["out"](2 * h))
    assert torch.equal(forward(model, x), model["out"](h))


def test_capture_records_latest_output_in_the_graph():
    model = net()
    x1, x2 = torch.randn(5, 3), torch.randn(2, 3)
    with capture(model, ["hidden.1", "out"]) as got:
        forward(model, x1)
        out = forward(model, x2)
    assert set(got) == {"hidden.1", "out"}
    assert torch.equal(got["out"], out)
    assert got["hidden.1"].shape == (2, 4)
    got["hidden.1"].sum().backward()
    assert model["hidden"][0].weight.grad is not None


@pytest.mark.parametrize("capture_first", [True, False])
def test_capture_sees_the_raw_output_whichever_block_is_outer(capture_first):
    model, x = net(), torch.randn(5, 3)
    h = model["hidden"][0](x)
    double = {"hidden.1": lambda a: 2 * a}
    if capture_first:
        with capture(model, ["hidden.1"]) as got, intercept(model, double):
            out = forward(model, x)
    else:
        with intercept(model, double), capture(model, ["hidden.1"]) as got:
            out = forward(model, x)
    assert torch.allclose(got["hidden.1"], h)  # the module's own output, not the transform's
    with torch.no_grad():
        assert not torch.allclose(out, forward(model, x))  # while the transform did apply


def test_nested_intercepts_apply_in_the_order_entered():
    model, x = net(), torch.randn(5, 3)
    h = model["hidden"][0](x)
    with intercept(model, {"hidden.1": lambda a: a + 1}), intercept(
        model, {"hidden.1": lambda a: 3 * a}
    ), capture(model, ["hidden.1"]) as got:
        out = forward(model, x)
    with intercept(model, {"hidden.1": lambda a: 3 * (a + 1)}):
        expected = forward(model, x)
    assert torch.allclose(got["hidden.1"], h)
    assert torch.allclose(out, expected)


def test_hooks_removed_after_block_also_when_it_raises():
    model, x = net(), torch.randn(5, 3)
    with intercept(model, {"hidden.1": lambda a: a}), capture(model, ["out"]):
        assert hook_count(model) == 2
    assert hook_count(model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with intercept(model, {"hidden.1": lambda a: a}), capture(model, ["out"]):
            forward(model, x)
            raise RuntimeError("boom")
    assert hook_count(model) == 0


@pytest.mark.parametrize("enter", [
    lambda model: intercept(model, {"hidden.2": lambda a: a}),
    lambda model: capture(model, ["out", "hidden.2"]),
])
def test_unknown_site_names_it_and_lists_known(enter):
    model = net()
    with pytest.raises(ValueError) as err:
        with enter(model):
            pass
    message = str(err.value)
    assert "'hidden.2'" in message
    assert "known sites: hidden, hidden.0, hidden.1, out" in message
    assert hook_count(model) == 0
