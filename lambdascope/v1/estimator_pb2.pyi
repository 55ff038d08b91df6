from lambdascope.v1 import access_pb2 as _access_pb2
from lambdascope.v1 import audit_pb2 as _audit_pb2
from lambdascope.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartAuditRequest(_message.Message):
    __slots__ = ("request_id", "model_version_id", "dataset_id", "config", "model_version_ids", "validate_only")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_IDS_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_version_id: str
    dataset_id: str
    config: _audit_pb2.AuditConfig
    model_version_ids: _containers.RepeatedScalarFieldContainer[str]
    validate_only: bool
    def __init__(self, request_id: _Optional[str] = ..., model_version_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., config: _Optional[_Union[_audit_pb2.AuditConfig, _Mapping]] = ..., model_version_ids: _Optional[_Iterable[str]] = ..., validate_only: _Optional[bool] = ...) -> None: ...
