"""Translate an audit request into the core's terms, and refuse what cannot work, early.

Used by the servicer (before a job is queued) and by the worker (on what it downloaded), so a
request is judged by the same rules in both places.
"""
from __future__ import annotations

from lambdascope.v1 import audit_pb2, models_pb2, registry_pb2
from services.estimator.llc import SGLDConfig

FLOAT_DTYPES = {"float16", "bfloat16", "float32", "float64"}
LOSS_NAMES = {models_pb2.LOSS_KIND_MSE: "mse", models_pb2.LOSS_KIND_CROSS_ENTROPY: "cross_entropy"}


class SpecError(ValueError):
    """The request cannot be run as given; the message names the field."""


def sgld_config(config: audit_pb2.AuditConfig) -> SGLDConfig:
    """The sampler settings: fields the request set, the core's defaults for the rest."""
    sampler = config.sampler
    given = {field.name: value for field, value in sampler.ListFields()}
    try:
        sgld = SGLDConfig(**given)
        sgld.validate()
    except ValueError as exc:
        raise SpecError(f"config.sampler.{exc}") from None
    return sgld


def resolved_config(config: audit_pb2.AuditConfig, sgld: SGLDConfig, nbeta: float,
                    device: str) -> audit_pb2.AuditConfig:
    """The configuration as actually used, every default written out (for the report)."""
    out = audit_pb2.AuditConfig(loss=config.loss, device=device)
    s = out.sampler
    s.chains, s.draws, s.burnin, s.thin = sgld.chains, sgld.draws, sgld.burnin, sgld.thin
    s.step_size, s.localization, s.nbeta = sgld.step_size, sgld.localization, nbeta
    s.batch_size, s.seed = sgld.batch_size, sgld.seed
    return out


def check_request(config: audit_pb2.AuditConfig, max_chain_steps: int) -> SGLDConfig:
    if config.loss not in LOSS_NAMES:
        raise SpecError("config.loss must be LOSS_KIND_MSE or LOSS_KIND_CROSS_ENTROPY")
    sgld = sgld_config(config)
    steps = sgld.chains * sgld.total_steps
    if steps > max_chain_steps:
        raise SpecError(
            f"config.sampler asks for {sgld.chains} chains x {sgld.total_steps} steps = {steps} "
            f"chain-steps, more than this estimator's limit of {max_chain_steps}; lower chains, "
            "draws, burnin or thin")
    return sgld


def check_fit(version: registry_pb2.ModelVersion, dataset: registry_pb2.Dataset,
              loss: int) -> None:
    """Refuse a dataset whose x/y shapes and dtypes cannot go through the model and loss."""
    x_shape, y_shape = list(dataset.x_shape), list(dataset.y_shape)
    in_shape, out_shape = list(version.input_shape), list(version.output_shape)
    if dataset.x_dtype not in FLOAT_DTYPES:
        raise SpecError(f"dataset x must be floating point (got {dataset.x_dtype})")
    if in_shape and not _fits(x_shape[1:], in_shape[1:]):
        raise SpecError(
            f"dataset x has shape {x_shape} but model {version.model_name} v{version.version} "
            f"takes inputs of shape {_fmt(in_shape)}")
    outputs = version.task_outputs or (out_shape[-1] if out_shape else -1)
    if loss == models_pb2.LOSS_KIND_CROSS_ENTROPY:
        if dataset.y_dtype in FLOAT_DTYPES or len(y_shape) != 1:
            raise SpecError(
                f"cross_entropy needs y as integer class labels of shape [n] (got {dataset.y_dtype} "
                f"{y_shape})")
        if len(out_shape) != 2:
            raise SpecError(f"cross_entropy needs model outputs of shape [batch, classes] "
                            f"(the model returns {_fmt(out_shape)})")
    elif loss == models_pb2.LOSS_KIND_MSE:
        if dataset.y_dtype not in FLOAT_DTYPES:
            raise SpecError(f"mse needs floating-point targets y (got {dataset.y_dtype})")
        expected = [*out_shape[1:-1], outputs] if out_shape else None
        if expected is not None and not _fits(y_shape[1:], expected):
            raise SpecError(
                f"dataset y has shape {y_shape} but the model's task outputs have shape "
                f"{_fmt([-1, *expected])}")


def _fits(actual: list[int], expected: list[int]) -> bool:
    return len(actual) == len(expected) and all(e < 0 or a == e for a, e in zip(actual, expected))


def _fmt(shape: list[int]) -> str:
    return "[" + ", ".join("batch" if d < 0 else str(d) for d in shape) + "]"
