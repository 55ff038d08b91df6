"""Per-tensor weight statistics and parameter groups, for modules and exported programs."""
from __future__ import annotations

import math

import pytest
import torch

from lambdascope.llc.weights import WeightStatistics, layer_groups, weight_statistics


def test_gaussian_weights_have_zero_excess_kurtosis_and_their_std():
    torch.manual_seed(0)
    m = torch.nn.Linear(300, 300)
    torch.nn.init.normal_(m.weight, mean=0.1, std=0.3)
    stats = {s.name: s for s in weight_statistics(m)}
    w = stats["weight"]
    assert w.numel == 90_000
    assert w.std == pytest.approx(0.3, rel=0.01)
    assert w.mean == pytest.approx(0.1, abs=0.005)
    assert abs(w.kurtosis) < 0.1  # stderr sqrt(24 / n) ≈ 0.016


def test_uniform_and_heavy_tailed_kurtosis():
    torch.manual_seed(1)
    m = torch.nn.Module()
    m.u = torch.nn.Parameter(torch.rand(100_000))
    m.t = torch.nn.Parameter(torch.distributions.StudentT(10.0).sample((100_000,)))
    stats = {s.name: s for s in weight_statistics(m)}
    assert stats["u"].kurtosis == pytest.approx(-1.2, abs=0.03)
    assert stats["u"].std == pytest.approx(1 / math.sqrt(12), rel=0.01)
    assert stats["t"].kurtosis == pytest.approx(1.0, abs=0.4)  # 6 / (ν − 4) for Student-t ν = 10


def test_constant_tensor_has_nan_kurtosis():
    m = torch.nn.Linear(3, 2)
    torch.nn.init.constant_(m.bias, 0.5)
    bias = next(s for s in weight_statistics(m) if s.name == "bias")
    assert bias == WeightStatistics("bias", 2, 0.5, 0.0, bias.kurtosis) and math.isnan(bias.kurtosis)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)])
        self.scale = torch.nn.Parameter(torch.ones(3))
        self.register_buffer("shift", torch.zeros(3))

    def forward(self, x):
        return self.layers[1](self.layers[0](x).relu()) * self.scale + self.shift


NET_GROUPS = {
    "": ["scale"],
    "layers.0": ["layers.0.weight", "layers.0.bias"],
    "layers.1": ["layers.1.weight", "layers.1.bias"],
}


def test_layer_groups_of_modules():
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    assert layer_groups(mlp) == {"0": ["0.weight", "0.bias"], "2": ["2.weight", "2.bias"]}
    assert layer_groups(Net()) == NET_GROUPS


def test_layer_groups_and_statistics_of_exported_programs_match_the_module():
    torch.manual_seed(2)
    net = Net()
    program = torch.export.export(net, (torch.randn(5, 4),)).module()
    assert layer_groups(program) == NET_GROUPS
    by_name = lambda m: {s.name: s for s in weight_statistics(m)}  # noqa: E731
    assert by_name(program) == by_name(net)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    exported = torch.export.export(mlp, (torch.randn(3, 4),)).module()
    assert layer_groups(exported) == {"0": ["0.weight", "0.bias"], "2": ["2.weight", "2.bias"]}


def test_tied_parameters_are_listed_once():
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    b.weight = a.weight
    m = torch.nn.Sequential(a, b)
    assert layer_groups(m) == {"0": ["0.weight", "0.bias"], "1": ["1.bias"]}
    assert [s.name for s in weight_statistics(m)] == ["0.weight", "0.bias", "1.bias"]
