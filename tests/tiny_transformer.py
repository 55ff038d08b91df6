"""A tiny causal transformer (embeddings, LayerNorm, attention through
``scaled_dot_product_attention``, GELU, dropout, a fixed positional buffer) trained to a minimum
of a token task: the tests' case for auditing the layers language models are made of."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VOCAB, SEQ, WIDTH, HEADS = 7, 6, 16, 2


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.qkv, self.proj = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 2 * WIDTH), nn.GELU(), nn.Linear(2 * WIDTH, WIDTH))
        self.drop = nn.Dropout(0.1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, _ = h.shape
        q, k, v = self.qkv(self.ln1(h)).view(b, t, 3, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, WIDTH)
        h = h + self.drop(self.proj(a))
        return h + self.drop(self.mlp(self.ln2(h)))


class TinyTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.register_buffer("position", torch.randn(SEQ, WIDTH) * 0.5)
        self.block = Block()
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.block(self.embed(ids) + self.position)))


def train_tiny_transformer(n: int = 256, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model in eval mode at a minimum, x token ids [n, SEQ], y next tokens [n, SEQ]).

    The task: each position's target is the token before it (the first: token 0), with 25% of
    targets replaced by random tokens, so the best logits are finite and the minimum is a real
    one; full-batch Adam, then L-BFGS to settle on it."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.randint(0, VOCAB, (n, SEQ), generator=gen)
    y = torch.cat([torch.zeros(n, 1, dtype=torch.long), x[:, :-1]], dim=1)
    noisy = torch.rand(n, SEQ, generator=gen) < 0.25
    y = torch.where(noisy, torch.randint(0, VOCAB, (n, SEQ), generator=gen), y)
    model = TinyTransformer()

    def loss() -> torch.Tensor:
        return F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))

    model.eval()  # dropout off while fitting: the minimum is the eval-mode loss's
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(400):
        opt.zero_grad()
        loss().backward()
        opt.step()
    lbfgs = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        lbfgs.zero_grad()
        value = loss()
        value.backward()
        return value
    for _ in range(3):
        lbfgs.step(closure)
    return model, x, y
