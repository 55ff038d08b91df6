"""The local learning coefficient as a plain-PyTorch library: SGLD around trained weights,
step-size calibration, run-until-trusted stopping, diagnostics and a verdict. No gRPC or protobuf
here: the estimator service, the SDK's in-process ``lambdascope.estimate_llc`` and the benchmarks
all call this.

    from lambdascope.llc import SGLDConfig, estimate_llc
    result = estimate_llc(model.eval(), x, y, torch.nn.functional.mse_loss, SGLDConfig())

Those names load torch when first used, not when the package is imported: the CLI and the
report views use the library's torch-free modules (``compare``, ``stages``, ``uncertainty``) and
start a second faster without it.
"""
from __future__ import annotations

__all__ = ["LLCResult", "SGLDConfig", "SamplerDivergedError", "estimate_llc"]


def __getattr__(name: str):
    if name in __all__:
        from lambdascope.llc import llc

        return getattr(llc, name)
    raise AttributeError(f"module 'lambdascope.llc' has no attribute {name!r}")
