"""Translate an audit request into the core's terms, and refuse what cannot work, early.

Used by the servicer (before a job is queued) and by the worker (on what it downloaded), so a
request is judged by the same rules in both places.
"""
from __future__ import annotations

import torch

from lambdascope import enums, fit
from lambdascope.enums import LOSS_NAMES
from lambdascope.v1 import audit_pb2, estimator_pb2, models_pb2, registry_pb2
from lambdascope.llc.audit import AuditSettings
from lambdascope.llc.losses import LABEL_LOSSES
from lambdascope.llc.llc import LLCResult, SGLDConfig

DTYPES = {name: getattr(torch, name) for name in enums.AUDIT_DTYPES}
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
        sgld = SGLDConfig(**given)  # checked as it is built
    except ValueError as exc:
        raise SpecError(f"config.sampler.{exc}") from None
    return sgld


def audit_settings(config: audit_pb2.AuditConfig, max_chain_steps: int) -> AuditSettings:
    """Check a request's configuration on its own (no model yet) and build the core's settings."""
    if config.loss not in LOSS_NAMES:
        raise SpecError(f"config.loss must be {enums.one_of(models_pb2.LossKind)}")
    if config.model_targets and LOSS_NAMES[config.loss] in LABEL_LOSSES:
        raise SpecError("config.model_targets needs a regression loss (mse or mae): with cross-entropy the "
                        "model's own outputs are scores, not targets")
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
                         hessian=measures.hessian, weight_statistics=measures.weight_statistics,
                         model_targets=config.model_targets)


def resolved_config(config: audit_pb2.AuditConfig, sgld: SGLDConfig, llc: LLCResult, device: str
                    ) -> audit_pb2.AuditConfig:
    """The configuration as actually used, every default (and the calibrated step) written out,
    from the settings the audit ran with (``sgld``, built once from ``config``)."""
    out = audit_pb2.AuditConfig()
    out.CopyFrom(config)
    out.device = device
    s = out.sampler
    s.chains, s.thin = sgld.chains, sgld.thin
    if sgld.adaptive:  # the length it chose is in the report's Stopping; the rule is written out
        s.until_ess, s.max_rhat, s.max_mcse = sgld.until_ess, sgld.max_rhat, sgld.max_mcse
        s.max_drift, s.max_steps, s.max_seconds = sgld.max_drift, sgld.max_steps, sgld.max_seconds
    else:
        s.draws, s.burnin = sgld.fixed_draws, sgld.fixed_burnin
    s.step_size, s.localization, s.nbeta = llc.step_size, llc.localization, llc.nbeta
    s.batch_size, s.seed, s.weight_decay = sgld.batch_size, sgld.seed, sgld.weight_decay
    s.bias_correction, s.compile_gradients = sgld.bias_correction, sgld.compile_gradients
    s.precondition, s.remove_slope = sgld.precondition, sgld.remove_slope
    return out


def check_fit(version: registry_pb2.ModelVersion, dataset: registry_pb2.Dataset, loss: int) -> None:
    """:func:`lambdascope.fit.check_fit`, its refusal as a SpecError."""
    try:
        fit.check_fit(version, dataset, loss)
    except fit.FitError as exc:
        raise SpecError(str(exc)) from None
