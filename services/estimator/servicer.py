"""Estimator RPCs: check an audit request and queue it as a job; the
Jobs service (lambdascope.job_service) answers for its jobs on the same server."""
from __future__ import annotations

from lambdascope import auth, errors, job_service
from lambdascope.client import Client
from lambdascope.jobs import JobManager
from lambdascope.server import ServiceBinding
from lambdascope.specs import canonical_json
from lambdascope.v1 import estimator_pb2, estimator_pb2_grpc, jobs_pb2
from services.estimator import audit_spec

class EstimatorServicer(estimator_pb2_grpc.EstimatorServicer):
    def __init__(self, jobs: JobManager, registry: Client, max_chain_steps: int):
        self.jobs = jobs
        self.registry = registry
        self.max_chain_steps = max_chain_steps

    def StartAudit(self, request, context):
        checking = request.validate_only
        if not request.dataset_id and not checking:
            raise errors.InvalidArgument("dataset_id is required")
        try:
            settings = audit_spec.audit_settings(request.config, self.max_chain_steps)
            ids = audit_spec.version_ids(request) if not checking or request.model_version_id or \
                request.model_version_ids else []
            dataset = errors.call_upstream("registry", self.registry.get_dataset,
                                           request.dataset_id) if request.dataset_id else None
            resolved = []
            for version_id in ids:  # ids or references ("name@alias", "name/latest", ...)
                version = errors.call_upstream("registry", self.registry.get_model_version,
                                               version_id)
                if dataset is not None:
                    audit_spec.check_fit(version, dataset, request.config.loss)
                resolved.append(version.id)
        except audit_spec.SpecError as exc:
            raise errors.InvalidArgument(str(exc)) from None
        if checking:
            return jobs_pb2.Job()
        spec = estimator_pb2.StartAuditRequest()
        spec.CopyFrom(request)
        spec.ClearField("request_id")
        # The job audits the versions the references name now, even if an alias moves later.
        if spec.model_version_ids:
            spec.model_version_ids[:] = resolved
        else:
            spec.model_version_id = resolved[0]
        return self.jobs.start(request.request_id, canonical_json(spec),
                               total=len(ids) * settings.sgld.chains * settings.sgld.total_steps,
                               team=auth.current().team,
                               credential=job_service.caller_credential(self.registry))


def binding(jobs: JobManager, registry: Client, max_chain_steps: int) -> ServiceBinding:
    servicer = EstimatorServicer(jobs, registry, max_chain_steps)
    return ServiceBinding(
        estimator_pb2.DESCRIPTOR.services_by_name["Estimator"].full_name,
        lambda server: estimator_pb2_grpc.add_EstimatorServicer_to_server(servicer, server))
