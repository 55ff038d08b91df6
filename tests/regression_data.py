"""A small regression problem for audits: an MLP trained on it, exported as a .pt2 archive,
and its data as safetensors (the tests' `regression_files`, and bench/chaos.py's inputs)."""
from __future__ import annotations

import pathlib


def write(out: pathlib.Path, steps: int = 1500) -> tuple[pathlib.Path, pathlib.Path]:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    x = torch.randn(512, 3)
    y = (x @ torch.tensor([[1.0], [-2.0], [0.5]])) + 0.1 * torch.randn(512, 1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    model_path, data_path = out / "regressor.pt2", out / "regression.safetensors"
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (x[:2].clone(),), dynamic_shapes=({0: batch},))
    torch.export.save(program, model_path)
    save_file({"x": x, "y": y}, str(data_path))
    return model_path, data_path
