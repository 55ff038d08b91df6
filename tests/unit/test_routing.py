"""Gradient routing (Cloud et al. 2024): exact gradient masking, per-example masks, spec checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lambdascope.training.routing import masks, route, routing_transforms
from lambdascope.training.sites import intercept
from lambdascope.v1 import trainer_pb2
from services.trainer.translate import compile_routing



def mlp() -> nn.Sequential:
    """3 → 4 (site "1", before the nonlinearity) → 2."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Identity(), nn.Tanh(), nn.Linear(4, 2))


def per_example_grads(model: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> list:
    """Gradient of each example's own loss w.r.t. the first layer's weight, from one batched
    forward (examples with different masks share the batch)."""
    transforms = {} if mask is None else {"1": lambda a: route(a, mask)}
    with intercept(model, transforms):
        out = model(x)
    grads = []
    for i in range(x.shape[0]):
        loss = (out[i] - torch.tensor([0.3, -0.2])).pow(2).sum()
        grads.append(torch.autograd.grad(loss, model[0].weight, retain_graph=True)[0])
    return grads


def test_routed_site_masks_upstream_gradient_exactly_per_example():
    model, x = mlp(), torch.randn(4, 3)
    mask = torch.tensor([
        [0.0, 0.0, 0.0, 0.0],
        [-0.75, -0.75, -0.75, -0.75],
        [1.0, 1.0, 1.0, 1.0],
        [1.0, 0.0, -0.75, 1.0],
    ])
    plain = per_example_grads(model, x, None)
    routed = per_example_grads(model, x, mask)
    assert torch.equal(routed[0], torch.zeros_like(plain[0]))
    assert torch.allclose(routed[1], -0.75 * plain[1], rtol=1e-6, atol=0)
    assert torch.equal(routed[2], plain[2])
    # Row u of the first layer's weight gradient is the gradient reaching unit u.
    assert torch.equal(routed[3][[0, 3]], plain[3][[0, 3]])
    assert torch.equal(routed[3][1], torch.zeros(3))
    assert torch.allclose(routed[3][2], -0.75 * plain[3][2], rtol=1e-6, atol=0)
    assert all(g.abs().sum() > 0 for g in plain)


def test_all_ones_mask_is_plain_backprop_bit_for_bit():
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    grads = []
    for mask in (None, torch.ones(8, 4)):
        model = mlp()
        transforms = {} if mask is None else {"1": lambda a, m=mask: route(a, m)}
        with intercept(model, transforms):
            (model(x) - y).pow(2).mean().backward()
        grads.append([p.grad for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_forward_value_is_unchanged():
    torch.manual_seed(1)
    a = torch.randn(6, 5, requires_grad=True)
    mask = torch.tensor([0.0, 1.0, -0.75, 2.5, 0.1]).repeat(6, 1)
    assert torch.equal(route(a, mask), a)
    conv = torch.randn(6, 3, 4, 4)
    assert torch.equal(route(conv, torch.full((6, 3), -0.75)), conv)


def test_conv_site_is_masked_per_channel():
    torch.manual_seed(2)
    a = torch.randn(2, 3, 4, 4, requires_grad=True)
    upstream = torch.randn(2, 3, 4, 4)
    mask = torch.tensor([[1.0, 0.0, -0.75], [0.0, 1.0, 1.0]])
    (route(a, mask) * upstream).sum().backward()
    assert torch.equal(a.grad, mask[:, :, None, None] * upstream)


def test_mask_shape_must_match_batch_and_units():
    with pytest.raises(ValueError, match="does not match"):
        route(torch.randn(4, 5), torch.ones(4, 3))


# --- specs ---------------------------------------------------------------------------------

SHAPES = {"hidden.1": (6,), "conv.1": (3, 4, 4), "latent": (4,)}


def group(labels=None, rows=None, units=None, values=None) -> trainer_pb2.RouteGroup:
    g = trainer_pb2.RouteGroup()
    if labels is not None:
        g.labels.labels.extend(labels)
    if rows is not None:
        g.rows.start, g.rows.stop = rows
    if units is not None:
        g.units.start, g.units.stop, g.units.weight = units
    if values is not None:
        g.values.values.extend(values)
    return g


def spec(*rules: tuple[str, list[trainer_pb2.RouteGroup]]) -> trainer_pb2.GradientRoutingSpec:
    return trainer_pb2.GradientRoutingSpec(
        rules=[trainer_pb2.RoutingRule(site=site, groups=groups) for site, groups in rules]
    )


def compile_one(site, *groups, num_classes=10):
    (rule,) = compile_routing(
        spec((site, list(groups))), SHAPES, num_rows=100, num_classes=num_classes
    )
    return rule


def test_first_group_wins_and_unselected_examples_get_ones():
    rule = compile_one(
        "hidden.1",
        group(labels=[0, 1], units=(0, 3, 0)),  # weight 0 means 1
        group(labels=[1, 2], values=[-0.75, 0, 0, 0, 0, 2]),
    )
    labels = torch.tensor([0, 1, 2, 7])
    got = masks(rule, labels, rows=torch.arange(4))
    expected = torch.tensor([
        [1.0, 1, 1, 0, 0, 0],
        [1.0, 1, 1, 0, 0, 0],
        [-0.75, 0, 0, 0, 0, 2],
        [1.0, 1, 1, 1, 1, 1],
    ], dtype=torch.float64)
    assert torch.equal(got, expected)


def test_rows_and_labels_selectors():
    rule = compile_one(
        "latent",
        group(rows=(10, 20), units=(2, 4, -0.75)),
        group(labels=[3], units=(0, 2, 0)),
    )
    labels = torch.tensor([3, 3, 3, 5, 5])
    rows = torch.tensor([9, 10, 19, 20, 15])
    expected = torch.tensor([
        [1.0, 1, 0, 0],  # label 3, row outside the range
        [0.0, 0, -0.75, -0.75],  # row 10: the rows group comes first
        [0.0, 0, -0.75, -0.75],
        [1.0, 1, 1, 1],  # row 20 is past stop; label 5 is in no group
        [0.0, 0, -0.75, -0.75],
    ], dtype=torch.float64)
    assert torch.equal(masks(rule, labels, rows), expected)


def test_rows_selector_without_labels():
    rule = compile_one("latent", group(rows=(0, 2), values=[0, 0, 1, 1]), num_classes=None)
    got = masks(rule, None, torch.tensor([0, 1, 2]))
    assert torch.equal(got, torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1]]).double())


def test_label_selector_needs_labels_in_the_batch():
    rule = compile_one("latent", group(labels=[1], units=(0, 2, 1)))
    with pytest.raises(ValueError, match="no labels"):
        masks(rule, None, torch.tensor([0]))


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Identity())
        self.head = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


def test_conv_site_routes_whole_channels_per_example():
    rules = compile_routing(
        spec(("conv.1", [group(labels=[0], units=(0, 1, 0)), group(labels=[1], units=(1, 3, 0))])),
        SHAPES, num_rows=100, num_classes=10,
    )
    model, x = ConvNet(), torch.randn(2, 1, 4, 4)
    labels, rows = torch.tensor([0, 1]), torch.tensor([5, 6])
    bias_grads = []
    for i in range(2):
        model.zero_grad()
        with intercept(model, routing_transforms(rules, labels, rows)):
            model(x)[i].sum().backward()
        bias_grads.append(model.conv[0].bias.grad.clone())
    # Example 0 (label 0) updates channel 0 only; example 1 (label 1) channels 1 and 2.
    assert torch.equal(bias_grads[0][1:], torch.zeros(2)) and bias_grads[0][0] != 0
    assert bias_grads[1][0] == 0 and torch.all(bias_grads[1][1:] != 0)


def test_compiled_rule_fields():
    rule = compile_one("conv.1", group(rows=(0, 100), units=(1, 2, -0.75)))
    assert rule.site == "conv.1" and rule.width == 3
    assert rule.groups[0].rows == (0, 100) and rule.groups[0].labels is None
    assert rule.groups[0].mask == (0.0, -0.75, 0.0)
    assert compile_routing(spec(), SHAPES, num_rows=1, num_classes=None) == []


UNITS = (0, 2, 1)


@pytest.mark.parametrize("rules, num_classes, field, detail", [
    ([("nope", [group(labels=[0], units=UNITS)])], 10,
     "routing.rules[0].site", "known sites: hidden.1, conv.1, latent"),
    ([("latent", [group(labels=[0], units=UNITS)]), ("latent", [group(labels=[1], units=UNITS)])],
     10, "routing.rules[1].site", "already routed by routing.rules[0]"),
    ([("latent", [])], 10, "routing.rules[0].groups", "at least one group"),
    ([("latent", [group(units=UNITS)])], 10, "routing.rules[0].groups[0]", "no selector"),
    ([("latent", [group(labels=[0])])], 10, "routing.rules[0].groups[0]", "no mask"),
    ([("latent", [group(labels=[0], units=UNITS)])], None,
     "routing.rules[0].groups[0].labels", "no class labels"),
    ([("latent", [group(labels=[0, 10, -1], units=UNITS)])], 10,
     "routing.rules[0].groups[0].labels.labels", "[10, -1] are outside 0..9"),
    ([("latent", [group(labels=[], units=UNITS)])], 10,
     "routing.rules[0].groups[0].labels.labels", "empty"),
    ([("latent", [group(rows=(5, 5), units=UNITS)])], 10,
     "routing.rules[0].groups[0].rows", "start 5 must be < stop 5"),
    ([("latent", [group(rows=(-1, 5), units=UNITS)])], 10,
     "routing.rules[0].groups[0].rows.start", ">= 0"),
    ([("latent", [group(rows=(0, 101), units=UNITS)])], 10,
     "routing.rules[0].groups[0].rows.stop", "beyond the dataset's 100 rows"),
    ([("latent", [group(rows=(0, 5), units=(2, 2, 1))])], 10,
     "routing.rules[0].groups[0].units", "0 <= start < stop <= 4"),
    ([("conv.1", [group(rows=(0, 5), units=(0, 4, 1))])], 10,
     "routing.rules[0].groups[0].units", "0 <= start < stop <= 3"),
    ([("latent", [group(rows=(0, 5), units=(-1, 2, 1))])], 10,
     "routing.rules[0].groups[0].units", "0 <= start"),
    ([("latent", [group(rows=(0, 5), units=(0, 2, float("nan")))])], 10,
     "routing.rules[0].groups[0].units.weight", "finite"),
    ([("latent", [group(labels=[1], units=UNITS), group(rows=(0, 5), values=[1, 0, 1])])], 10,
     "routing.rules[0].groups[1].values.values", "expected 4 values"),
    ([("latent", [group(rows=(0, 5), values=[1, 0, float("inf"), 1])])], 10,
     "routing.rules[0].groups[0].values.values", "finite"),
])
def test_compile_routing_errors_name_the_field(rules, num_classes, field, detail):
    with pytest.raises(ValueError) as err:
        compile_routing(spec(*rules), SHAPES, num_rows=100, num_classes=num_classes)
    message = str(err.value)
    assert message.startswith(field + ":") or message.startswith(field + " "), message
    assert detail in message, message


def test_a_penalty_at_a_routed_site_is_not_masked_by_the_routing():
    """As in the reference implementation: routing masks what flows downstream of the site,
    while a penalty on the site's activations reaches every unit whatever the mask."""
    from lambdascope.training.penalties import CompiledPenalty, total_penalty
    from lambdascope.training.sites import capture, intercept

    torch.manual_seed(0)
    model = nn.ModuleDict({"enc": nn.Linear(3, 4), "site": nn.Identity(), "dec": nn.Linear(4, 2)})
    x = torch.randn(6, 3)
    zero = {"site": lambda a: route(a, torch.zeros(len(a), 4))}
    with intercept(model, zero), capture(model, ["site"]) as seen:
        out = model["dec"](model["site"](model["enc"](x)))
    penalty = total_penalty([CompiledPenalty("site", "l1", 1.0)], seen)
    (out.sum() + penalty).backward()
    routed_grad = model["enc"].weight.grad.clone()
    model.zero_grad()
    total_penalty([CompiledPenalty("site", "l1", 1.0)],
                  {"site": model["enc"](x)}).backward()
    assert torch.equal(routed_grad, model["enc"].weight.grad)  # only the penalty's gradient
