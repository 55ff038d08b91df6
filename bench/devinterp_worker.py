"""Runs devinterp 1.3.2's LLC estimator on one DLN case; executed by bench/vs_devinterp.py with the
python of bench/.venv-devinterp (never imported by the product, never run in the main venv).

Everything devinterp would otherwise default is set explicitly: nbeta (devinterp's default uses
the BATCH size), burn-in (its default is 0: average over every step), steps between draws,
localization γ, seeds, init_loss. Writes one JSON object to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import dln  # noqa: E402


class BatchIndexed(torch.utils.data.TensorDataset):
    """TensorDataset that serves a whole batch with one indexing op (DataLoader's __getitems__ hook)."""

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices)
        return tuple(t[idx] for t in self.tensors)


def _as_is(batch):
    return batch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--case", required=True, help="a case name of bench/dln.py, or a case as JSON "
                   "(name, widths, seed, rank) for a case made elsewhere (bench/default_audit.py)")
    p.add_argument("--chains", type=int, required=True)
    p.add_argument("--burnin", type=int, required=True)
    p.add_argument("--draws", type=int, required=True)
    p.add_argument("--step-size", type=float, required=True)
    p.add_argument("--localization", type=float, required=True)
    p.add_argument("--nbeta", type=float, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--loader", choices=["plain", "batched"], default="plain",
                   help="plain: DataLoader(TensorDataset, batch_size, shuffle=True), the usual way; batched: "
                        "the same DataLoader over a dataset that serves a batch in one indexing op "
                        "(devinterp with its data loading at its fastest)")
    p.add_argument("--loader-probe", type=int, default=2000, help="batches drawn to time the DataLoader alone")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # devinterp warns on every call (deprecations, seeds, nbeta)
    import importlib.metadata
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    from torch.utils.data import DataLoader, TensorDataset

    case = dln.case_from_dict(json.loads(args.case)) if args.case.startswith("{") else dln.case_by_name(args.case)
    model, x, y = dln.make_problem(case)
    data_digest = dln.digest(x, y, *model.parameters())

    # L_n(w*) on the full data set, as our estimator measures it. For these noise-free teachers it
    # is 0.0, and devinterp 1.3.2 treats a falsy init_loss as "not given" and re-measures it on
    # num_chains minibatches of a rebuilt loader instead; so 0.0 is passed as 1e-30 (nβ·1e-30 is
    # nothing). What it used is reconstructed and reported back.
    with torch.no_grad():
        init_loss = sum(dln.mse(model(x[i:i + args.batch_size]), y[i:i + args.batch_size]).item()
                        * x[i:i + args.batch_size].shape[0] for i in range(0, x.shape[0], args.batch_size)) / x.shape[0]

    if args.loader == "plain":
        loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)
    else:
        loader = DataLoader(BatchIndexed(x, y), batch_size=args.batch_size, shuffle=True, collate_fn=_as_is)

    def evaluate(m, batch):
        xb, yb = batch
        return dln.mse(m(xb), yb)

    # warm-up (one-time import and allocator costs stay out of the timing, as for ours)
    estimate_learning_coeff_with_summary(
        model, loader, evaluate=evaluate, sampling_method=SGLD,
        optimizer_kwargs=dict(lr=args.step_size, localization=args.localization, nbeta=args.nbeta),
        num_chains=1, num_draws=5, num_burnin_steps=5, init_loss=1e-30, cores=1, seed=args.seed,
        device="cpu", verbose=False)

    began = time.perf_counter()
    out = estimate_learning_coeff_with_summary(
        model,
        loader,
        evaluate=evaluate,
        sampling_method=SGLD,
        optimizer_kwargs=dict(lr=args.step_size, localization=args.localization, nbeta=args.nbeta),
        num_chains=args.chains,
        num_draws=args.draws,
        num_burnin_steps=args.burnin,
        num_steps_bw_draws=1,
        init_loss=init_loss if init_loss else 1e-30,
        cores=1,
        seed=args.seed,
        device="cpu",
        verbose=False,
        online=False,
    )
    wall = time.perf_counter() - began

    # How much of that is the DataLoader alone (TensorDataset indexes 500 rows one by one, then collates).
    probe = max(1, args.loader_probe)
    t0 = time.perf_counter()
    drawn = 0
    while drawn < probe:
        for _ in loader:
            drawn += 1
            if drawn >= probe:
                break
    loader_per_batch = (time.perf_counter() - t0) / probe

    per_chain = [float(out[f"llc-chain/{i}"]) for i in range(args.chains)]
    steps = args.burnin + args.draws
    result = {
        "devinterp_version": importlib.metadata.version("devinterp"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "case": case.name,
        "data_digest": data_digest,
        "lambda_hat": float(out["llc/mean"]),
        "std": float(out["llc/std"]),
        "per_chain": per_chain,
        "init_loss_given": init_loss,
        # not returned by devinterp: reconstructed from chain 0 as mean(draw losses) − λ̂_0 / nβ
        "init_loss_used": float(out["loss/trace"][0].astype("float64").mean()) - per_chain[0] / args.nbeta,
        "wall_seconds": wall,
        "ms_per_chain_step": 1e3 * wall / (steps * args.chains),
        "loader": args.loader,
        "loader_ms_per_batch": 1e3 * loader_per_batch,
        "pid": os.getpid(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
