"""lambdascope: complexity audits of neural networks (the shared package: plumbing, SDK, CLI).

    import lambdascope
    result = lambdascope.audit(model, x, y, loss="mse")   # see lambdascope.sdk

The SDK's names are loaded on first use, so importing a submodule (the services' plumbing, the
protos) does not pull in gRPC.
"""

__version__ = "0.1.0"

_SDK = {"audit": "lambdascope.sdk", "AuditResult": "lambdascope.sdk", "AuditFailed": "lambdascope.sdk",
        "Estimate": "lambdascope.sdk", "result_of": "lambdascope.sdk", "estimate_llc": "lambdascope.sdk",
        "LocalResult": "lambdascope.sdk", "report": "lambdascope.sdk", "trajectory": "lambdascope.sdk",
        "Trajectory": "lambdascope.sdk", "Client": "lambdascope.client"}


def __getattr__(name: str):
    if name in _SDK:
        import importlib

        return getattr(importlib.import_module(_SDK[name]), name)
    raise AttributeError(f"module 'lambdascope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SDK])
