"""Which project files one audit runs code in, per process (not run by make test): the CLI, the
registry, the estimator and its worker, with the trainer beside them as the baseline of what an
idle server runs (bootstrap, health, auth, metrics). For docs/architecture.md's "newcomer's path".

    .venv/bin/python bench/audit_path.py                       # this checkout
    git worktree add /tmp/rev REV && .venv/bin/python bench/audit_path.py --tree /tmp/rev

Every process gets a profile hook (a sitecustomize.py on PYTHONPATH, written to a scratch folder)
that records the files of the project's functions that were called (module and class bodies,
which run on import, not counted). The audit: `lambdascope audit` on a 49-parameter MLP and 256 examples, no
sampler flags but `--max-steps 600` (the default path: calibration, warm-up, run until trusted,
diagnostics, report page), on a LocalPlatform of the tree.
"""
from __future__ import annotations

import argparse
import collections
import os
import pathlib
import subprocess
import sys
import tempfile

HOOK = '''
import atexit, os, sys, threading
_dir, _root = os.environ["AUDIT_PATH_DIR"], os.environ["AUDIT_PATH_ROOT"]
_seen = set()
def _hook(frame, event, arg):
    code = frame.f_code
    # functions only (CO_NEWLOCALS): a module's or a class's body runs on import
    if event == "call" and code.co_flags & 0x2 and code.co_filename.startswith(_root):
        _seen.add(code.co_filename[len(_root) + 1:])
sys.setprofile(_hook)
threading.setprofile(_hook)
def _dump():
    role = next((r for r in ("estimator.worker", "trainer.worker", "registry", "trainer", "estimator",
                             "cli") if r in " ".join(sys.argv).replace("/", ".")), "other")
    with open(os.path.join(_dir, f"{role}-{os.getpid()}.txt"), "w") as fh:
        fh.write("\\n".join(sorted(f for f in _seen if not f.startswith(".venv"))))
atexit.register(_dump)
'''
ROLES = {"cli": "CLI", "registry": "registry", "estimator": "estimator", "estimator.worker": "audit worker"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tree", default=str(pathlib.Path(__file__).resolve().parents[1]))
    args = p.parse_args(argv)
    tree = pathlib.Path(args.tree).resolve()
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="audit-path-"))
    (scratch / "hook").mkdir()
    (scratch / "hook" / "sitecustomize.py").write_text(HOOK)
    (scratch / "trace").mkdir()
    import safetensors.torch
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x = torch.randn(256, 4)
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, (x[:2],), dynamic_shapes=({0: batch},)), scratch / "m.pt2")
    safetensors.torch.save_file({"x": x, "y": model(x).detach()}, scratch / "d.safetensors")
    env = {"PYTHONPATH": f"{scratch / 'hook'}:{tree}", "AUDIT_PATH_DIR": str(scratch / "trace"),
           "AUDIT_PATH_ROOT": str(tree), "OMP_NUM_THREADS": "1"}
    sys.path.insert(0, str(tree))
    from lambdascope.local import LocalPlatform

    with LocalPlatform(scratch / "data", extra_env=env) as platform:
        run = subprocess.run([sys.executable, "-m", "lambdascope.cli", "audit", "--model", str(scratch / "m.pt2"),
                              "--data", str(scratch / "d.safetensors"), "--loss", "mse", "--max-steps", "600",
                              "--server", platform.endpoints["registry"]], cwd=tree, capture_output=True, text=True,
                             env={**os.environ, **env, "LAMBDASCOPE_API_KEY": platform.api_key})
    if run.returncode not in (0, 1):  # 1: the audit ended with a warning, which is fine here
        print(run.stdout[-2000:], run.stderr[-2000:], file=sys.stderr)
        return 2
    files = collections.defaultdict(set)
    for path in (scratch / "trace").glob("*.txt"):
        files[path.name.rsplit("-", 1)[0]] |= set(path.read_text().split())
    idle = files["trainer"]
    used = set().union(*(files[r] for r in ROLES))
    for role, name in ROLES.items():
        print(f"{name:13s} {len(files[role]):3d} files, {len(files[role] - idle):3d} beyond an idle server's")
    print(f"{'all four':13s} {len(used):3d} files, {len(used - idle):3d} beyond an idle server's "
          f"(the idle trainer ran {len(idle)})")
    for f in sorted(used - idle):
        print("  ", f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
