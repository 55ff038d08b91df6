"""Certificate decoders (Cloud et al. 2024) on synthetic latents with a known split."""

from __future__ import annotations

import pytest
import torch

from lambdascope.training.certificates import CertificateResult, certificate_errors



N, CODE, WIDTH = 200, 3, 16
HALVES = [(0, CODE), (CODE, 2 * CODE)]
FAST = dict(hidden=(32,), epochs=60, lr=1e-2, batch_size=50)


def synthetic(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images x = tanh(W z) of a 3-dim code z (W fixed), in two groups of alternating rows."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(CODE, WIDTH, generator=torch.Generator().manual_seed(123))
    z = torch.randn(N, CODE, generator=gen)
    group = torch.arange(N) % 2
    return z, torch.tanh(z @ w), group


def split_latent(z: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Half h holds z for group h's examples and zeros for the others: a certified split."""
    own = (group[:, None] == torch.tensor([0, 1])).float()
    return torch.cat([z * own[:, :1], z * own[:, 1:]], dim=1)


def test_split_latent_certifies_both_halves():
    z, x, group = synthetic(0)
    z_eval, x_eval, group_eval = synthetic(1)
    result = certificate_errors(
        split_latent(z, group), x, group, HALVES, **FAST,
        x_eval=x_eval, latent_eval=split_latent(z_eval, group_eval), group_eval=group_eval,
    )
    assert all(r > 1.5 for r in result.ratio), result


def test_latent_with_everything_in_both_halves_does_not_certify():
    z, x, group = synthetic(0)
    z_eval, x_eval, group_eval = synthetic(1)
    mix = torch.linalg.qr(torch.randn(CODE, CODE, generator=torch.Generator().manual_seed(7)))[0]
    both = lambda z: torch.cat([z, z @ mix], dim=1)  # noqa: E731
    result = certificate_errors(
        both(z), x, group, HALVES, **FAST,
        x_eval=x_eval, latent_eval=both(z_eval), group_eval=group_eval,
    )
    assert all(0.7 < r < 1.4 for r in result.ratio), result


def test_evaluates_on_training_data_by_default_and_is_seeded():
    z, x, group = synthetic(0)
    latent = split_latent(z, group)
    state = torch.get_rng_state()
    first = certificate_errors(latent, x, group, HALVES, **{**FAST, "epochs": 5})
    assert torch.equal(torch.get_rng_state(), state)
    again = certificate_errors(latent, x, group, HALVES, **{**FAST, "epochs": 5})
    assert first == again
    assert len(first.own) == len(first.foreign) == 2


def test_ratio_is_foreign_over_own():
    assert CertificateResult(own=[0.1, 0.2], foreign=[0.3, 0.2]).ratio == pytest.approx([3, 1])


def test_argument_checks():
    z, x, group = synthetic(0)
    with pytest.raises(ValueError, match="all of x_eval"):
        certificate_errors(z, x, group, [(0, 1)], x_eval=x)
    with pytest.raises(ValueError, match=r"halves\[1\]"):
        certificate_errors(z, x, group, [(0, 1), (1, 4)])
    with pytest.raises(ValueError, match="in and outside group 0"):
        certificate_errors(z, x, torch.zeros(N, dtype=torch.int64), [(0, 1), (1, 2)])
