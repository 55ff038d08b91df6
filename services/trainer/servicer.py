"""Trainer RPCs: check a training spec and queue it as a job; the
Jobs service (lambdascope.job_service) answers for its jobs on the same server."""
from __future__ import annotations

from lambdascope import auth, errors, job_service
from lambdascope.client import Client
from lambdascope.jobs import JobManager
from lambdascope.server import ServiceBinding
from lambdascope.specs import canonical_json
from lambdascope.v1 import trainer_pb2, trainer_pb2_grpc
from services.trainer import train_spec

class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    def __init__(self, jobs: JobManager, registry: Client):
        self.jobs = jobs
        self.registry = registry

    def StartTraining(self, request, context):
        if not request.HasField("spec"):
            raise errors.InvalidArgument("spec is required")
        spec = request.spec
        try:
            train_spec.train_config(spec)
            if spec.dataset.HasField("dataset_id"):
                dataset = errors.call_upstream("registry", self.registry.get_dataset,
                                               spec.dataset.dataset_id)
                train_spec.check_dataset(spec, dataset)
        except train_spec.SpecError as exc:
            raise errors.InvalidArgument(str(exc)) from None
        return self.jobs.start(request.request_id, canonical_json(spec),
                               team=auth.current().team,
                               credential=job_service.caller_credential(self.registry))


def binding(jobs: JobManager, registry: Client) -> ServiceBinding:
    servicer = TrainerServicer(jobs, registry)
    return ServiceBinding(
        trainer_pb2.DESCRIPTOR.services_by_name["Trainer"].full_name,
        lambda server: trainer_pb2_grpc.add_TrainerServicer_to_server(servicer, server))
