"""Anti-PGD / PGD noise injection (lambdascope/training/anti_pgd.py) against its definition."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator

import pytest
import torch

from lambdascope.training.anti_pgd import NoiseInjection



def reference_draws(
    params: list[torch.Tensor], sigma: float, distribution: str, seed: int
) -> Iterator[list[torch.Tensor]]:
    """The documented draw order, reproduced independently of NoiseInjection."""
    g = torch.Generator().manual_seed(seed)
    while True:
        draw = []
        for p in params:
            if distribution == "gaussian":
                draw.append(torch.randn(p.shape, generator=g, dtype=p.dtype) * sigma)
            else:
                signs = torch.randint(0, 2, p.shape, generator=g) * 2 - 1
                draw.append(signs.to(p.dtype) * sigma)
        yield draw


def run(
    params: list[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    noise: NoiseInjection,
    loss_fn: Callable[[list[torch.Tensor]], torch.Tensor],
    steps: range,
) -> list[list[torch.Tensor]]:
    """Train over `steps`; returns the evaluation point w_t seen by the forward of each step."""
    points = []
    for t in steps:
        noise.perturb(t)
        points.append([p.detach().clone() for p in params])
        optimizer.zero_grad()
        loss_fn(params).backward()
        noise.restore()
        optimizer.step()
        noise.after_step(t)
    return points


def leaves(*shapes: tuple[int, ...], dtype: torch.dtype = torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def quadratic(a: torch.Tensor) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    return lambda ps: 0.5 * (a * ps[0].square()).sum()


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_known_noise_sequence_with_zero_update(distribution):
    # A zero gradient makes every optimizer update exactly zero, so the evaluation points are
    # pure noise: anti_pgd w_t = z_0 + ξ_t (hence w_{t+1} − w_t = ξ_{t+1} − ξ_t), and pgd
    # w_{t+1} = w_t + ξ_{t+1}. Compared bit for bit with the independently drawn sequence.
    def zero_grad_loss(ps):
        return sum(0.0 * p.square().sum() for p in ps)

    for kind in ("anti_pgd", "pgd"):
        params = leaves((3,), (2, 2))
        start = [p.detach().clone() for p in params]
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        noise = NoiseInjection(params, kind=kind, sigma=0.5, distribution=distribution, seed=7)
        points = run(params, opt, noise, zero_grad_loss, range(1, 9))
        ref = reference_draws(params, 0.5, distribution, seed=7)
        if kind == "anti_pgd":
            for w in points:
                xi = next(ref)
                assert all(torch.equal(wi, zi + x) for wi, zi, x in zip(w, start, xi))
            assert all(torch.equal(p, z) for p, z in zip(params, start))  # clean weights kept
        else:
            expected = start
            for w in points:
                assert all(torch.equal(wi, e) for wi, e in zip(w, expected))
                expected = [e + x for e, x in zip(expected, next(ref))]
            assert all(torch.equal(p, e) for p, e in zip(params, expected))


@pytest.mark.parametrize("kind", ["anti_pgd", "pgd"])
@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_matches_definition_with_gradient(kind, distribution):
    # L(w) = ½ Σ a_i w_i², plain SGD: ∇L(w) = a ⊙ w.
    lr, sigma, steps = 0.1, 0.05, 20
    a = torch.tensor([0.5, 1.0, 2.0, 4.0, 8.0], dtype=torch.float64)
    params = leaves((5,), dtype=torch.float64)
    opt = torch.optim.SGD(params, lr=lr)
    noise = NoiseInjection(params, kind=kind, sigma=sigma, distribution=distribution, seed=3)
    w = [pts[0] for pts in run(params, opt, noise, quadratic(a), range(1, steps + 1))]
    xi = [d[0] for d, _ in zip(reference_draws(params, sigma, distribution, 3), range(steps + 1))]
    for t in range(steps - 1):
        gd = w[t] - lr * a * w[t]
        if kind == "anti_pgd":  # xi[t] is ξ_{t+1} (ξ_1 drawn first)
            expected = gd + xi[t + 1] - xi[t]
        else:  # pgd's first draw is added after step 1
            expected = gd + xi[t]
        torch.testing.assert_close(w[t + 1], expected, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(w[1], w[0] - lr * a * w[0], atol=1e-3)  # the noise is visible


@pytest.mark.parametrize("kind", ["anti_pgd", "pgd"])
def test_noise_stops_at_stop_step(kind):
    stop, steps = 5, 10
    a = torch.tensor([0.3, 1.0, 3.0], dtype=torch.float64)
    params = leaves((3,), dtype=torch.float64)
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True)
    noise = NoiseInjection(params, kind=kind, sigma=0.2, stop_step=stop, seed=1)
    assert noise.active(stop - 1) and not noise.active(stop) and not noise.active(stop + 100)
    assert NoiseInjection(params, kind=kind, sigma=0.2).active(10**9)  # 0 = whole run

    loss = quadratic(a)
    if kind == "anti_pgd":
        run(params, opt, noise, loss, range(1, stop))
        clean = [p.detach().clone() for p in params]
        opt_state = copy.deepcopy(opt.state_dict())
        points = run(params, opt, noise, loss, range(stop, steps + 1))
        assert torch.equal(points[0][0], clean[0])  # evaluation point = clean weights at stop

        plain = [c.clone().requires_grad_() for c in clean]
        plain_opt = torch.optim.SGD(plain, lr=0.1, momentum=0.9, nesterov=True)
        plain_opt.load_state_dict(opt_state)
        for _ in range(stop, steps + 1):
            plain_opt.zero_grad()
            loss(plain).backward()
            plain_opt.step()
        assert torch.equal(params[0], plain[0])
    else:
        for t in range(1, steps + 1):
            opt.zero_grad()
            loss(params).backward()
            opt.step()
            before = params[0].detach().clone()
            noise.after_step(t)
            assert torch.equal(params[0], before) == (t >= stop), t


def test_restore_returns_bit_identical_clean_weights():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    params = list(model.parameters())
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    noise = NoiseInjection(params, kind="anti_pgd", sigma=0.1, seed=0)
    xi = [x.clone() for x in next(reference_draws(params, 0.1, "gaussian", 0))]
    clean = [p.detach().clone() for p in params]

    noise.perturb(1)
    assert all(torch.equal(p, c + d) for p, c, d in zip(params, clean, xi))
    with pytest.raises(RuntimeError, match="before restore"):
        noise.perturb(1)
    torch.nn.functional.mse_loss(model(x), y).backward()
    noise.restore()
    assert all(torch.equal(p, c) for p, c in zip(params, clean))
    assert all(p.is_leaf and p.requires_grad and p.grad_fn is None for p in params)

    shifted = copy.deepcopy(model)  # the gradient was taken at the perturbed point z + ξ
    with torch.no_grad():
        for p, c, d in zip(shifted.parameters(), clean, xi):
            p.copy_(c + d)
    torch.nn.functional.mse_loss(shifted(x), y).backward()
    for p, q in zip(params, shifted.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)


def test_noise_distributions():
    sigma = 0.3
    for dtype in (torch.float32, torch.float64):
        p = torch.zeros(10_000, dtype=dtype, requires_grad=True)
        NoiseInjection([p], kind="pgd", sigma=sigma, distribution="rademacher").after_step(1)
        assert torch.equal(p.detach().abs(), torch.full_like(p, sigma).detach())
        # fraction of + signs: binomial(10⁴, ½), sd 0.005; allow 5 sd
        assert abs((p > 0).double().mean().item() - 0.5) < 0.025

    n = 200_000
    p = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    NoiseInjection([p], kind="pgd", sigma=sigma, seed=5).after_step(1)
    # sample std of n normals has relative sd 1/√(2n) ≈ 0.16%; the mean has sd σ/√n. 5 sd each.
    assert abs(p.std().item() / sigma - 1) < 5 / math.sqrt(2 * n)
    assert abs(p.mean().item()) < 5 * sigma / math.sqrt(n)


@pytest.mark.parametrize("kind", ["anti_pgd", "pgd"])
def test_state_dict_resumes_bit_exactly(kind):
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    y = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))

    def build(seed: int, noise_seed: int):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        params = list(model.parameters())
        opt = torch.optim.Adam(params, lr=1e-2)
        noise = NoiseInjection(params, kind=kind, sigma=0.05, stop_step=25, seed=noise_seed)
        return model, params, opt, noise

    def loss(_):
        return torch.nn.functional.mse_loss(model(x), y)

    model, params, opt, noise = build(0, 0)
    run(params, opt, noise, loss, range(1, 11))
    snapshot = [copy.deepcopy(s.state_dict()) for s in (model, opt, noise)]
    run(params, opt, noise, loss, range(11, 31))  # crosses stop_step
    final = [p.detach().clone() for p in params]

    def resume(with_noise_state: bool) -> list[torch.Tensor]:
        nonlocal model
        model, params, opt, noise = build(1, 99)
        model.load_state_dict(snapshot[0])
        opt.load_state_dict(snapshot[1])
        if with_noise_state:
            noise.load_state_dict(snapshot[2])
        run(params, opt, noise, loss, range(11, 31))
        return params

    assert all(torch.equal(p, f) for p, f in zip(resume(True), final))
    assert not all(torch.equal(p, f) for p, f in zip(resume(False), final))

    other = NoiseInjection(params, kind="pgd" if kind == "anti_pgd" else "anti_pgd", sigma=0.1)
    with pytest.raises(ValueError, match="needs keys"):
        other.load_state_dict(snapshot[2])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "sgd"}, "noise.kind"),
        ({"distribution": "uniform"}, "noise.distribution"),
        ({"sigma": -0.1}, "noise.sigma"),
        ({"sigma": float("nan")}, "noise.sigma"),
        ({"sigma": float("inf")}, "noise.sigma"),
        ({"stop_step": -1}, "noise.stop_step"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    args = {"kind": "anti_pgd", "sigma": 0.1} | kwargs
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        NoiseInjection(leaves((2,)), **args)


def test_widening_valley_anti_pgd_finds_flatter_minimum():
    # L(u, v) = ½ v² ‖u‖², u ∈ R¹⁰: every point with v = 0 is a minimum, with Tr ∇²L = ‖u‖².
    # GD from u = 1, v = 1 at lr 0.1 lands on v = 0 in one step and stays at ‖u‖² = 8.1.
    # Anti-PGD descends L + σ²/2 · Tr ∇²L and shrinks ‖u‖² (to ~0.1 here); PGD random-walks
    # along the valley (‖u‖² ~ 10). Measured over seeds 0..7: Anti-PGD ≤ 0.21, PGD ≥ 7.7.
    def final_u_norm2(kind: str, sigma: float, seed: int) -> float:
        u = torch.ones(10, dtype=torch.float64, requires_grad=True)
        v = torch.ones(1, dtype=torch.float64, requires_grad=True)
        noise = NoiseInjection([u, v], kind=kind, sigma=sigma, seed=seed)
        loss = lambda ps: 0.5 * ps[1].square().sum() * ps[0].square().sum()  # noqa: E731
        run([u, v], torch.optim.SGD([u, v], lr=0.1), noise, loss, range(1, 201))
        return u.detach().square().sum().item()

    gd = final_u_norm2("anti_pgd", 0.0, 0)
    assert gd == pytest.approx(8.1)
    for seed in range(3):
        anti, pgd = final_u_norm2("anti_pgd", 0.3, seed), final_u_norm2("pgd", 0.3, seed)
        assert anti < 0.1 * gd and anti < 0.1 * pgd, (seed, anti, pgd)
