"""Certificate decoders: does each routed latent half encode only its own group?

The evaluation of the gradient-routing autoencoder of Cloud et al. 2024 (arXiv 2410.04332):
for each half of the latent, a fresh decoder is trained on that half alone (detached) over
ALL examples, then its reconstruction error is measured on its own group's examples and on
the others'. A half certifies the split when it rebuilds its own group well and the foreign
groups badly (foreign/own error ratio clearly above 1); an unrouted latent gives about 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class CertificateResult:
    """Per half: mean absolute reconstruction error on its own group's examples and on the
    other groups' examples."""

    own: list[float]
    foreign: list[float]

    @property
    def ratio(self) -> list[float]:
        """foreign / own per half."""
        return [f / o for f, o in zip(self.foreign, self.own)]


def certificate_errors(
    latent: Tensor,
    x: Tensor,
    group: Tensor,
    halves: Sequence[tuple[int, int]],
    *,
    hidden: Sequence[int] = (256,),
    epochs: int = 200,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    x_eval: Tensor | None = None,
    latent_eval: Tensor | None = None,
    group_eval: Tensor | None = None,
) -> CertificateResult:
    """latent: [n, k] codes (detached here); x: [n, ...] the inputs to rebuild (flattened);
    group: int64 [n]; half h = latent[:, start:stop] for halves[h] = (start, stop) owns group h.
    Each decoder is an MLP (half width → hidden… → x width, ReLU between layers) trained with
    Adam on the L1 loss, initialised and shuffled from `seed` (the global RNG is untouched).
    Errors are measured on the eval split when given (all three of x_eval, latent_eval,
    group_eval), else on the training data."""
    evals = (x_eval, latent_eval, group_eval)
    if any(t is None for t in evals) and any(t is not None for t in evals):
        raise ValueError("give all of x_eval, latent_eval and group_eval, or none")
    if x_eval is None:
        x_eval, latent_eval, group_eval = x, latent, group
    k = latent.shape[1]
    for h, (start, stop) in enumerate(halves):
        if not 0 <= start < stop <= k:
            raise ValueError(f"halves[{h}] = ({start}, {stop}) is not a range within 0..{k}")
        if not (group_eval == h).any() or (group_eval == h).all():
            raise ValueError(f"the evaluation data needs examples in and outside group {h}")
    own, foreign = [], []
    for h, (start, stop) in enumerate(halves):
        decoder = train_decoder(
            latent[:, start:stop].detach(), x.detach().flatten(1),
            hidden=hidden, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
        )
        with torch.no_grad():
            errors = (decoder(latent_eval[:, start:stop]) - x_eval.flatten(1)).abs().mean(1)
        mine = group_eval == h
        own.append(errors[mine].mean().item())
        foreign.append(errors[~mine].mean().item())
    return CertificateResult(own=own, foreign=foreign)


def train_decoder(
    codes: Tensor,
    targets: Tensor,
    *,
    hidden: Sequence[int],
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = mlp([codes.shape[1], *hidden, targets.shape[1]])
    decoder = decoder.to(device=codes.device, dtype=codes.dtype)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n = codes.shape[0]
    for _ in range(epochs):
        for batch in torch.randperm(n, generator=generator).split(batch_size):
            batch = batch.to(codes.device)
            optimizer.zero_grad()
            F.l1_loss(decoder(codes[batch]), targets[batch]).backward()
            optimizer.step()
    return decoder.eval()


def mlp(widths: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])
