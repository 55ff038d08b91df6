"""The chains' counter-based noise (lambdascope.llc.noise): Philox4x32-10 against the reference
implementation's published answers, the Gaussian draws against N(0, 1), and a chain sampled with
it (compiled, the default on the CPU) against theory."""
from __future__ import annotations

import math

import pytest
import torch

from lambdascope.llc import noise
from lambdascope.llc.compiled import GradientCompiler
from lambdascope.llc.sgld import run_sgld

M32 = 0xFFFFFFFF

# Random123's known-answer vectors (its tests/kat_vectors, Salmon et al. 2011): counter, key, output
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M32,) * 4, (M32,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_philox_gives_the_reference_implementations_answers(counter, key, expected):
    words = noise.philox4x32(*(torch.tensor(v, dtype=torch.int64) for v in (*counter, *key)))
    assert tuple(int(w) for w in words) == expected


def test_the_same_words_batched_and_compiled():
    """Broadcast over many counters, eagerly and compiled into one graph: each element is the scalar
    function's answer (no overflow, no lost bits in the whole-tensor arithmetic)."""
    gen = torch.Generator().manual_seed(0)
    counters = [torch.randint(0, 2**32, (64,), generator=gen, dtype=torch.int64) for _ in range(4)]
    key = [torch.randint(0, 2**32, (1,), generator=gen, dtype=torch.int64) for _ in range(2)]
    batched = torch.stack(noise.philox4x32(*counters, *key))
    for j in (0, 17, 63):
        one = noise.philox4x32(*(c[j] for c in counters), key[0][0], key[1][0])
        assert [int(w) for w in one] == batched[:, j].tolist()
    keys = torch.cat(key).view(1, 2)
    step = torch.tensor(2**33 + 5, dtype=torch.int64)  # above 32 bits: the counter's high word
    compiler = GradientCompiler(after_seconds=0.0)

    def draw(grad, w, center, keys, step, coef):
        return noise.gaussian(keys, step, 1001, torch.float32)
    compiled = compiler.move(("test",), draw, "draw")
    args = (torch.zeros(1), torch.zeros(1), torch.zeros(1), keys, step, torch.zeros(4))
    torch.testing.assert_close(compiled(*args), draw(*args), rtol=1e-5, atol=1e-5)
    assert not compiler.move_failure


def test_gaussian_draws_are_standard_normal_and_independent():
    keys = noise.keys_from_words([1, 2**40 + 3, 2**63 + 7], torch.device("cpu"))
    draws = torch.stack([noise.gaussian(keys, torch.tensor(t), 20_001, torch.float64) for t in range(20)])
    assert draws.shape == (20, 3, 20_001)
    z = draws.reshape(-1)
    count = z.numel()  # 1.2 million
    # moments of N(0, 1), each within ~5 standard errors of its sampling error
    assert abs(float(z.mean())) < 5 / math.sqrt(count)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / count)
    assert abs(float(((z - z.mean()) ** 4).mean() / z.var() ** 2) - 3) < 5 * math.sqrt(24 / count)
    assert abs(float((z.abs() > 1.96).double().mean()) - 0.05) < 5 * math.sqrt(0.05 * 0.95 / count)
    # chains, steps and neighbouring coordinates uncorrelated
    pairs = [(draws[:, 0], draws[:, 1]), (draws[:-1], draws[1:]), (draws[..., :-1], draws[..., 1:]),
             (draws[..., 0:20_000:4], draws[..., 2:20_000:4])]
    for a, b in pairs:
        r = float(torch.corrcoef(torch.stack([a.reshape(-1), b.reshape(-1)]))[0, 1])
        assert abs(r) < 5 / math.sqrt(a.numel()), r
    # a coordinate's number depends on (key, step, coordinate) only: not on how many are drawn
    torch.testing.assert_close(noise.gaussian(keys, torch.tensor(3), 10, torch.float64), draws[3, :, :10])
    assert not torch.equal(draws[0, 0], draws[0, 1]) and not torch.equal(draws[0], draws[1])


def test_compiled_chains_with_philox_noise_sample_the_gaussian_posterior():
    """The default path on the CPU: eager Mersenne Twister, then compiled with Philox noise. On a
    regular model (linear regression, d = 12), nβ·(E[L] − L(w*)) on its localized posterior has the
    closed form Σ ½·nβh/(nβh + γ) (+ the minibatch loss's own offset, read off here by the
    baseline); the chains' λ̂ must match it as well with Philox as with the Mersenne Twister."""
    gen = torch.Generator().manual_seed(5)
    n, d = 4000, 12
    x = torch.randn(n, d, generator=gen) * torch.linspace(0.5, 2.0, d)
    model = torch.nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        y = model(x)
    nbeta, gamma = n / math.log(n), 10.0
    h = torch.linalg.eigvalsh(2 * x.T.double() @ x.double() / n)  # the MSE's Hessian
    expected = float((0.5 * nbeta * h / (nbeta * h + gamma)).sum())

    def mse(out, target):
        return (out - target).square().mean()
    run = dict(chains=4, steps=12_000, step_size=5e-5, localization=gamma, nbeta=nbeta, batch_size=n, seed=11,
               accept_every=0)
    results = {}
    for name, compiler, counter in [("mersenne", None, False), ("philox", GradientCompiler(after_seconds=0.0), None)]:
        trace = run_sgld(model, x, y, mse, compiler=compiler, counter_noise=counter, **run)
        results[name] = float(nbeta * trace.losses[:, 1000:].double().mean())
        if compiler is not None:
            assert compiler.summary().startswith("gradient and move with Philox noise compiled"), compiler.summary()
    # Euler's bias at this step, (ε/8)·nβ·tr ∇²L, is ~2% of λ; the Monte Carlo error ~3%
    for name, value in results.items():
        assert abs(value / expected - 1) < 0.08, (name, value, expected)
