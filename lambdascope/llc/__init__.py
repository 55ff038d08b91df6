"""The local learning coefficient as a plain-PyTorch library: SGLD around trained weights,
step-size calibration, run-until-trusted stopping, diagnostics and a verdict. No gRPC or protobuf
here: the estimator service, the SDK's in-process ``lambdascope.estimate_llc`` and the benchmarks
all call this.

    from lambdascope.llc import SGLDConfig, estimate_llc
    result = estimate_llc(model.eval(), x, y, torch.nn.functional.mse_loss, SGLDConfig())
"""
from lambdascope.llc.llc import LLCResult, SamplerDivergedError, SGLDConfig, estimate_llc

__all__ = ["LLCResult", "SGLDConfig", "SamplerDivergedError", "estimate_llc"]
