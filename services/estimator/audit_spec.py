"""Translate an audit request into the core's terms, and refuse what cannot work, early.

Used by the servicer (before a job is queued) and by the worker (on what it downloaded), so a
request is judged by the same rules in both places.
"""
from __future__ import annotations

import torch

from lambdascope import artifacts
from lambdascope.v1 import audit_pb2, estimator_pb2, models_pb2, registry_pb2
from services.estimator.audit import AuditSettings
from services.estimator.llc import LLCResult, SGLDConfig

FLOAT_DTYPES = {"float16", "bfloat16", "float32", "float64"}
INTEGER_DTYPES = artifacts.ID_DTYPES  # what a model may take as token ids
DTYPES = {"float32": torch.float32, "float64": torch.float64}
LOSS_NAMES = {models_pb2.LOSS_KIND_MSE: "mse", models_pb2.LOSS_KIND_CROSS_ENTROPY: "cross_entropy",
              models_pb2.LOSS_KIND_MAE: "mae"}
VERDICTS = {"ok": audit_pb2.VERDICT_STATE_OK, "warning": audit_pb2.VERDICT_STATE_WARNING,
            "failed": audit_pb2.VERDICT_STATE_FAILED}
MAX_VERSIONS = 1000


class SpecError(ValueError):
    """The request cannot be run as given; the message names the field."""


def version_ids(request: estimator_pb2.StartAuditRequest) -> list[str]:
    """The versions to audit, in order: model_version_id, or model_version_ids."""
    if request.model_version_id and request.model_version_ids:
        raise SpecError("give model_version_id or model_version_ids, not both")
    ids = list(request.model_version_ids) or ([request.model_version_id]
                                              if request.model_version_id else [])
    if not ids:
        raise SpecError("model_version_id (or model_version_ids) is required")
    if len(ids) > MAX_VERSIONS:
        raise SpecError(f"model_version_ids has {len(ids)} entries; at most {MAX_VERSIONS}")
    if any(not v for v in ids):
        raise SpecError("model_version_ids has an empty entry")
    return ids


def sgld_config(config: audit_pb2.AuditConfig) -> SGLDConfig:
    """The sampler settings: fields the request set, the core's defaults for the rest."""
    given = {field.name: value for field, value in config.sampler.ListFields()}
    try:
        sgld = SGLDConfig(**given)
        sgld.validate()
    except ValueError as exc:
        raise SpecError(f"config.sampler.{exc}") from None
    return sgld


def audit_settings(config: audit_pb2.AuditConfig, max_chain_steps: int) -> AuditSettings:
    """Check a request's configuration on its own (no model yet) and build the core's settings."""
    if config.loss not in LOSS_NAMES:
        raise SpecError("config.loss must be LOSS_KIND_MSE, LOSS_KIND_MAE or LOSS_KIND_CROSS_ENTROPY")
    if config.dtype and config.dtype not in DTYPES:
        raise SpecError(f"config.dtype must be one of {sorted(DTYPES)} or empty (got {config.dtype!r})")
    sgld = sgld_config(config)
    measures = config.measures
    groups = {}
    for i, group in enumerate(measures.groups):
        if not group.name or not group.patterns:
            raise SpecError(f"config.measures.groups[{i}] needs a name and at least one pattern")
        if group.name in groups:
            raise SpecError(f"config.measures.groups has two groups named {group.name!r}")
        groups[group.name] = list(group.patterns)
    runs = 1 + len(groups) + (1 if measures.per_layer_llc else 0)
    steps = sgld.chains * sgld.total_steps * runs
    if steps > max_chain_steps:
        raise SpecError(
            f"config asks for {sgld.chains} chains x {sgld.total_steps} steps"
            + (f" x {runs} sampling runs" if runs > 1 else "")
            + f" = {steps} chain-steps, more than this estimator's limit of {max_chain_steps}; "
            + ("lower chains or max_steps" if sgld.adaptive else "lower chains, draws, burnin or thin"))
    return AuditSettings(sgld=sgld, groups=groups, per_layer=measures.per_layer_llc,
                         hessian=measures.hessian, weight_statistics=measures.weight_statistics)


def resolved_config(config: audit_pb2.AuditConfig, llc: LLCResult, device: str
                    ) -> audit_pb2.AuditConfig:
    """The configuration as actually used, every default (and the calibrated step) written out."""
    out = audit_pb2.AuditConfig()
    out.CopyFrom(config)
    out.device = device
    sgld = sgld_config(config)
    s = out.sampler
    s.chains, s.thin = sgld.chains, sgld.thin
    if sgld.adaptive:  # the length it chose is in the report's Stopping; the rule is written out
        s.until_ess, s.max_rhat, s.max_mcse = sgld.until_ess, sgld.max_rhat, sgld.max_mcse
        s.max_drift, s.max_steps, s.max_seconds = sgld.max_drift, sgld.max_steps, sgld.max_seconds
    else:
        s.draws, s.burnin = sgld.fixed_draws, sgld.fixed_burnin
    s.step_size, s.localization, s.nbeta = llc.step_size, llc.localization, llc.nbeta
    s.batch_size, s.seed, s.weight_decay = sgld.batch_size, sgld.seed, sgld.weight_decay
    s.bias_correction = sgld.bias_correction
    return out


def check_fit(version: registry_pb2.ModelVersion, dataset: registry_pb2.Dataset,
              loss: int) -> None:
    """Refuse a dataset whose x/y shapes and dtypes cannot go through the model and loss."""
    x_shape, y_shape = list(dataset.x_shape), list(dataset.y_shape)
    in_shape, out_shape = list(version.input_shape), list(version.output_shape)
    where = f"model {version.model_name} v{version.version}"
    takes_ids = version.input_dtype in INTEGER_DTYPES
    if takes_ids and dataset.x_dtype not in INTEGER_DTYPES:
        raise SpecError(f"{where} takes integer inputs ({version.input_dtype}, e.g. token ids) but "
                        f"dataset x is {dataset.x_dtype}")
    if not takes_ids and dataset.x_dtype not in FLOAT_DTYPES:
        raise SpecError(f"dataset x must be floating point (got {dataset.x_dtype})"
                        + (f"; {where} takes {version.input_dtype} inputs" if version.input_dtype else ""))
    if in_shape and not _fits(x_shape[1:], in_shape[1:]):
        raise SpecError(f"dataset x has shape {x_shape} but {where} takes inputs of shape "
                        f"{_fmt(in_shape)}")
    outputs = version.task_outputs or (out_shape[-1] if out_shape else -1)
    if loss == models_pb2.LOSS_KIND_CROSS_ENTROPY:
        # [batch, classes] outputs with [n] labels, or [batch, ..., classes] with [n, ...] labels
        # (token-level: services.estimator.losses)
        if dataset.y_dtype not in INTEGER_DTYPES:
            raise SpecError(f"cross_entropy needs y as integer class labels (got {dataset.y_dtype})")
        if len(out_shape) < 2:
            raise SpecError(f"cross_entropy needs model outputs of shape [batch, ..., classes] "
                            f"({where} returns {_fmt(out_shape)})")
        if out_shape and not _fits(y_shape[1:], out_shape[1:-1]):
            raise SpecError(f"cross_entropy needs y of shape {_fmt([-1, *out_shape[1:-1]])} to match "
                            f"{where}'s outputs {_fmt(out_shape)} (got y {y_shape})")
    else:
        name = LOSS_NAMES[loss]
        if dataset.y_dtype not in FLOAT_DTYPES:
            raise SpecError(f"{name} needs floating-point targets y (got {dataset.y_dtype}); for "
                            "class labels use cross_entropy")
        expected = [*out_shape[1:-1], outputs] if out_shape else None
        if expected is not None and not _fits(y_shape[1:], expected):
            raise SpecError(f"dataset y has shape {y_shape} but the task outputs of {where} "
                            f"have shape {_fmt([-1, *expected])}")


def _fits(actual: list[int], expected: list[int]) -> bool:
    return len(actual) == len(expected) and all(e < 0 or a == e for a, e in zip(actual, expected))


def _fmt(shape: list[int]) -> str:
    return "[" + ", ".join("batch" if d < 0 else str(d) for d in shape) + "]"
