"""The ~1M-parameter causal transformer and its task, shared by the benchmarks that audit it
(bench/transformer_audit.py through the CLI, bench/gpu_check.py in process on a GPU).

A pre-LayerNorm causal transformer (token and learned position embeddings, attention through
scaled_dot_product_attention, GELU MLPs, a linear head at every position). The task: each
position's target is the token before it (the first: token 0), a quarter of targets replaced by
random tokens, so the best logits are finite. Loss: token-level cross-entropy over all positions.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, w = h.shape
        q, k, v = self.qkv(self.ln1(h)).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, w)
        h = h + self.proj(a)
        return h + self.mlp(self.ln2(h))


class Transformer(nn.Module):
    def __init__(self, vocab: int, context: int, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.embed, self.position = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(layers)])
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = self.position.weight[: ids.shape[1]]
        return self.head(self.norm(self.blocks(self.embed(ids) + positions)))


def token_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def make_data(n: int, vocab: int, context: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n, context), generator=gen)
    y = torch.cat([torch.zeros(n, 1, dtype=torch.long), x[:, :-1]], dim=1)
    noisy = torch.rand(n, context, generator=gen) < 0.25
    return x, torch.where(noisy, torch.randint(0, vocab, (n, context), generator=gen), y)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, seed: int) -> float:
    """Minibatch Adam with a decaying rate, then the full-data loss (eval mode throughout: no dropout)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=gen)
        opt.zero_grad()
        token_loss(model(x[idx]), y[idx]).backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        return float(token_loss(model(x), y))


def bayes_loss(vocab: int) -> float:
    """The task's lowest expected loss: 3/4 + 1/(4V) of the mass on the previous token, 1/(4V)
    on each other one (the first position always sees token 0 as its target's copy source)."""
    hit = 0.75 + 0.25 / vocab
    return -(hit * math.log(hit) + (1 - hit) * math.log(0.25 / vocab))

