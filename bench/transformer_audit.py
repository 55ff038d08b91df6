"""A ~1M-parameter transformer, exported as .pt2 and audited through the CLI as a user would
(not run by make test): time, peak memory, how the chains were grouped, λ̂ and its verdict.

    .venv/bin/python bench/transformer_audit.py                    # the default audit (no sampler flags)
    .venv/bin/python bench/transformer_audit.py --max-seconds 600  # capped (a flag: stated in the results)
    .venv/bin/python bench/transformer_audit.py --passes-only      # only the chains-per-pass timing

The model and task are bench/transformer_model.py's, by default width 128, 5 layers, 4 heads,
vocabulary 64, context 8: 1.05M parameters, trained with minibatch Adam (a few minutes on two
cores). Loss: token-level cross-entropy over all positions.

Chains per pass: the same model's SGLD steps are timed side by side in-process with all chains
in one pass and in groups, so the default (all together when memory allows) is checked on a
model where per-chain work is large.

The Kronecker preconditioner (the default audit's): a main-run step with and without it, timed
side by side the same way, for what rotating the model's 128-512-wide matrices costs.

Writes bench/results/transformer_audit.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # sets sys.path for the product
import torch
from safetensors.torch import save_file

from lambdascope.local import LocalPlatform
from lambdascope.llc import preconditioner
from lambdascope.llc.sgld import prepare_for_sampling, run_sgld
from transformer_model import Transformer, bayes_loss, make_data, token_loss, train


def sampling_program(model: nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """The model as the estimator samples a .pt2: exported with a dynamic batch, then prepared."""
    exported = torch.export.export(model, (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    return prepare_for_sampling(exported.module())


def time_passes(program: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chains: int, steps: int) -> list[dict]:
    """ms per step with 1, 2, ... chains per pass, run alternately (noise shared by all choices)."""
    choices = sorted({chains, *[g for g in (1, 2) if g < chains]})
    rows = {g: [] for g in choices}
    for _round in range(2):
        for g in choices:
            trace = run_sgld(program, x, y, token_loss, chains=chains, steps=steps, step_size=1e-7,
                             localization=10.0, nbeta=1000.0, batch_size=256, seed=0, accept_every=0,
                             chains_per_pass=g)
            rows[g].append(1000 * trace.seconds / steps)
    return [{"chains_per_pass": g, "ms_per_step": min(v), "ms_per_chain_step": min(v) / chains}
            for g, v in rows.items()]


def time_preconditioner(program: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chains: int, steps: int
                        ) -> dict:
    """ms per step of a main run (every 10th step scored, as the default audit's) without M and with
    the Kronecker M the default audit samples with, estimated from 100 scored steps; alternately,
    best of 2. What the rotations into and out of each weight matrix's eigenbasis cost here."""
    kwargs = dict(chains=chains, step_size=1e-7, localization=10.0, nbeta=1000.0, batch_size=256, seed=0)
    warm = run_sgld(program, x, y, token_loss, steps=100, accept_every=1, moments="kronecker", **kwargs)
    m = preconditioner.estimate(warm.moments, 10.0, "kronecker")
    rows = {"none": [], "kronecker": []}
    for _round in range(2):
        for name, more in (("none", {}), ("kronecker", {"precondition": m, "moments": "kronecker"})):
            trace = run_sgld(program, x, y, token_loss, steps=steps, accept_every=10, **kwargs, **more)
            rows[name].append(1000 * trace.seconds / steps)
    return {"steps": steps, "rotated_matrices": len(m.bases), "ms_per_step": {k: min(v) for k, v in rows.items()},
            "kronecker_over_none": min(rows["kronecker"]) / min(rows["none"])}


def audit_with_cli(server: str, model_path: Path, data_path: Path, out: Path, max_seconds: float | None) -> dict:
    cmd = [sys.executable, "-m", "lambdascope.cli", "audit", "--model", str(model_path), "--data",
           str(data_path), "--loss", "cross_entropy", "--json", str(out), "--server", server]
    if max_seconds is not None:
        cmd += ["--max-seconds", str(max_seconds)]
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=common.ROOT)
    wall = time.perf_counter() - began
    if not out.exists():
        return {"error": (proc.stderr or proc.stdout).strip()[-800:], "wall_seconds": wall, "argv": cmd[3:]}
    report = json.loads(out.read_text())
    res, stop, diag = report.get("resources", {}), report.get("stopping", {}), report.get("diagnostics", {})
    return {
        "argv": cmd[3:-2], "exit_code": proc.returncode, "wall_seconds": wall, "stdout": proc.stdout[-3000:],
        "lambda_hat": report["llc"]["mean"], "std": report["llc"].get("std", 0.0),
        "verdict": report["verdict"]["state"].removeprefix("VERDICT_STATE_").lower(),
        "reasons": report["verdict"].get("reasons", []),
        "stop": stop.get("reason", "").removeprefix("STOP_REASON_").lower(), "steps": int(stop.get("steps", 0)),
        "rhat": diag.get("rhat"), "ess": diag.get("ess"),
        "sampling_seconds": report["timing"].get("sampling_seconds"),
        "calibration_seconds": report["timing"].get("calibration_seconds"),
        "chain_steps_per_second": report["timing"].get("chain_steps_per_second"),
        "chains_per_pass": res.get("chains_per_pass"), "chains_summary": res.get("chains_summary"),
        "peak_memory_mib": int(res.get("peak_memory_bytes", 0)) / 2**20,
        "peak_memory_kind": res.get("peak_memory_kind"), "loss_description": report.get("loss_description"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=64)
    p.add_argument("--context", type=int, default=8)
    p.add_argument("--examples", type=int, default=4096)
    p.add_argument("--train-steps", type=int, default=1500)
    p.add_argument("--max-seconds", type=float, default=None, help="passed to the audit (default: none)")
    p.add_argument("--timing-steps", type=int, default=10)
    p.add_argument("--passes-only", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(common.RESULTS / "transformer_audit.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Transformer(args.vocab, args.context, args.width, args.layers, args.heads)
    d = sum(q.numel() for q in model.parameters())
    x, y = make_data(args.examples, args.vocab, args.context, seed=1)
    began = time.perf_counter()
    final_loss = train(model, x, y, args.train_steps, 64, seed=2)
    trained = time.perf_counter() - began
    bayes = bayes_loss(args.vocab)
    print(f"transformer: d = {d:,}, width {args.width}, {args.layers} layers, vocab {args.vocab}, context "
          f"{args.context}, n = {args.examples}; trained {args.train_steps} Adam steps in {trained:.0f} s, "
          f"loss {final_loss:.4f} (Bayes {bayes:.4f})", flush=True)
    program = sampling_program(model, x)
    passes = time_passes(program, x, y, 4, args.timing_steps)
    for row in passes:
        print(f"  {row['chains_per_pass']} chain(s) per pass: {row['ms_per_step']:.0f} ms per step of 4 chains", flush=True)
    kron = time_preconditioner(program, x, y, 4, 3 * args.timing_steps)
    print(f"  main-run step, no M: {kron['ms_per_step']['none']:.0f} ms; Kronecker M "
          f"({kron['rotated_matrices']} matrices rotated): {kron['ms_per_step']['kronecker']:.0f} ms "
          f"(x{kron['kronecker_over_none']:.2f})", flush=True)
    result = {"machine": common.machine(), "argv": sys.argv[1:], "d": d, "config": vars(args),
              "train_seconds": trained, "final_loss": final_loss, "bayes_loss": bayes, "passes": passes,
              "preconditioner": kron}
    if not args.passes_only:
        with tempfile.TemporaryDirectory(prefix="transformer-audit-") as tmp:
            folder = Path(tmp)
            program = torch.export.export(model, (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},))
            torch.export.save(program, folder / "transformer.pt2")
            save_file({"x": x, "y": y}, str(folder / "tokens.safetensors"))
            with LocalPlatform(folder / "platform") as platform:
                os.environ["LAMBDASCOPE_API_KEY"] = platform.api_key  # the CLI runs below use it
                audit = audit_with_cli(platform.endpoints["registry"], folder / "transformer.pt2",
                                       folder / "tokens.safetensors", folder / "report.json", args.max_seconds)
        result["audit"] = audit
        print(json.dumps({k: v for k, v in audit.items() if k != "stdout"}, indent=1), flush=True)
        print(audit.get("stdout", ""))
    common.write_json(Path(args.out), result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
