from crayfish.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataBatch(_message.Message):
    __slots__ = ("batch_id", "run_id", "sequence", "intended_ns", "created_ns", "model", "input", "attributes", "inputs")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    INTENDED_NS_FIELD_NUMBER: _ClassVar[int]
    CREATED_NS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    run_id: str
    sequence: int
    intended_ns: int
    created_ns: int
    model: str
    input: _tensor_pb2.Tensor
    attributes: _containers.ScalarMap[str, str]
    inputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    def __init__(self, batch_id: _Optional[str] = ..., run_id: _Optional[str] = ..., sequence: _Optional[int] = ..., intended_ns: _Optional[int] = ..., created_ns: _Optional[int] = ..., model: _Optional[str] = ..., input: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., inputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ...) -> None: ...

class ScoringFacts(_message.Message):
    __slots__ = ("backend", "worker_id", "worker_receive_ns", "worker_send_ns", "inference_ns", "decode_ns", "encode_ns", "server_inference_ns", "server_queue_ns", "server", "error", "engine")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_RECEIVE_NS_FIELD_NUMBER: _ClassVar[int]
    WORKER_SEND_NS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_NS_FIELD_NUMBER: _ClassVar[int]
    DECODE_NS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_NS_FIELD_NUMBER: _ClassVar[int]
    SERVER_INFERENCE_NS_FIELD_NUMBER: _ClassVar[int]
    SERVER_QUEUE_NS_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    backend: str
    worker_id: str
    worker_receive_ns: int
    worker_send_ns: int
    inference_ns: int
    decode_ns: int
    encode_ns: int
    server_inference_ns: int
    server_queue_ns: int
    server: str
    error: str
    engine: str
    def __init__(self, backend: _Optional[str] = ..., worker_id: _Optional[str] = ..., worker_receive_ns: _Optional[int] = ..., worker_send_ns: _Optional[int] = ..., inference_ns: _Optional[int] = ..., decode_ns: _Optional[int] = ..., encode_ns: _Optional[int] = ..., server_inference_ns: _Optional[int] = ..., server_queue_ns: _Optional[int] = ..., server: _Optional[str] = ..., error: _Optional[str] = ..., engine: _Optional[str] = ...) -> None: ...

class ScoredBatch(_message.Message):
    __slots__ = ("batch_id", "run_id", "sequence", "intended_ns", "created_ns", "model", "output", "facts", "input_append_ms", "attributes", "outputs")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    INTENDED_NS_FIELD_NUMBER: _ClassVar[int]
    CREATED_NS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_APPEND_MS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    run_id: str
    sequence: int
    intended_ns: int
    created_ns: int
    model: str
    output: _tensor_pb2.Tensor
    facts: ScoringFacts
    input_append_ms: int
    attributes: _containers.ScalarMap[str, str]
    outputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    def __init__(self, batch_id: _Optional[str] = ..., run_id: _Optional[str] = ..., sequence: _Optional[int] = ..., intended_ns: _Optional[int] = ..., created_ns: _Optional[int] = ..., model: _Optional[str] = ..., output: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., facts: _Optional[_Union[ScoringFacts, _Mapping]] = ..., input_append_ms: _Optional[int] = ..., attributes: _Optional[_Mapping[str, str]] = ..., outputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("batch_id", "run_id", "reason", "detail", "source_topic", "source_partition", "source_offset", "payload", "facts", "input_append_ms", "created_ns", "intended_ns")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TOPIC_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PARTITION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_APPEND_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_NS_FIELD_NUMBER: _ClassVar[int]
    INTENDED_NS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    run_id: str
    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    payload: bytes
    facts: ScoringFacts
    input_append_ms: int
    created_ns: int
    intended_ns: int
    def __init__(self, batch_id: _Optional[str] = ..., run_id: _Optional[str] = ..., reason: _Optional[str] = ..., detail: _Optional[str] = ..., source_topic: _Optional[str] = ..., source_partition: _Optional[int] = ..., source_offset: _Optional[int] = ..., payload: _Optional[bytes] = ..., facts: _Optional[_Union[ScoringFacts, _Mapping]] = ..., input_append_ms: _Optional[int] = ..., created_ns: _Optional[int] = ..., intended_ns: _Optional[int] = ...) -> None: ...
