"""Identity RPCs (teams, API keys, job credentials): validate, call services/registry/identities."""
from __future__ import annotations

from lambdascope import auth, errors
from lambdascope.server import ServiceBinding
from lambdascope.v1 import identity_pb2, identity_pb2_grpc
from services.registry.identities import MAX_EXPIRES_DAYS, Identities, check_team_name

MAX_JOB_CREDENTIAL_SECONDS = 7 * 24 * 3600


class IdentityServicer(identity_pb2_grpc.IdentityServicer):
    def __init__(self, identities: Identities):
        self.identities = identities

    def WhoAmI(self, request, context):
        return auth.current().to_proto()

    def CreateTeam(self, request, context):
        return self.identities.create_team(request.name)

    def ListTeams(self, request, context):
        return identity_pb2.ListTeamsResponse(teams=self.identities.list_teams())

    def CreateKey(self, request, context):
        check_team_name(request.team)
        if request.role not in auth.ROLE_NAMES:
            raise errors.InvalidArgument("role is required: ROLE_READER, ROLE_WRITER or ROLE_ADMIN")
        if not 0 <= request.expires_days <= MAX_EXPIRES_DAYS:
            raise errors.InvalidArgument(f"expires_days must be between 0 (never) and "
                                         f"{MAX_EXPIRES_DAYS}, got {request.expires_days}")
        if len(request.description) > 1000:
            raise errors.InvalidArgument("description is longer than 1000 characters")
        if len(request.user) > 100 or any(ord(c) < 32 or ord(c) == 127 for c in request.user):
            raise errors.InvalidArgument("user must be at most 100 characters, without control "
                                         "characters")
        return self.identities.create_key(
            request.team, request.role, expires_seconds=request.expires_days * 86400.0,
            description=request.description, created_by=auth.current().key_id,
            user=request.user)

    def ListKeys(self, request, context):
        if request.team:
            check_team_name(request.team)
        return identity_pb2.ListKeysResponse(
            keys=self.identities.list_keys(request.team, request.include_revoked))

    def RevokeKey(self, request, context):
        caller = auth.current()
        if not request.key_id:
            raise errors.InvalidArgument("key_id is required")
        if not caller.is_admin and request.key_id != caller.key_id:
            raise errors.PermissionDenied("only an admin key revokes other keys; a key may "
                                          "revoke itself", reason="role")
        return self.identities.revoke(request.key_id)

    def IssueJobCredential(self, request, context):
        caller = auth.current()
        if caller.job_id:
            raise errors.PermissionDenied("a job's credential cannot issue another",
                                          reason="job_credential")
        if not request.job_id or len(request.job_id) > 64:
            raise errors.InvalidArgument("job_id is required (at most 64 characters)")
        if not 0 < request.expires_seconds <= MAX_JOB_CREDENTIAL_SECONDS:
            raise errors.InvalidArgument(f"expires_seconds must be between 1 and "
                                         f"{MAX_JOB_CREDENTIAL_SECONDS}")
        return self.identities.create_key(
            caller.team, auth.Role.ROLE_WRITER, expires_seconds=float(request.expires_seconds),
            description=f"credential of job {request.job_id}", created_by=caller.key_id,
            job_id=request.job_id, user=caller.user)


def binding(identities: Identities) -> ServiceBinding:
    servicer = IdentityServicer(identities)
    return ServiceBinding(
        identity_pb2.DESCRIPTOR.services_by_name["Identity"].full_name,
        lambda server: identity_pb2_grpc.add_IdentityServicer_to_server(servicer, server))
