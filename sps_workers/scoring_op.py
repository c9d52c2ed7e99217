"""The scoring operator every engine shares: decode -> validate -> score -> encode.

Transport-agnostic: an engine hands it a record value and headers and gets back either an output
record or a dead-letter record. Two ways to use it:

- embedded / blocking: ``process(...)`` does everything in one call;
- pipelined / micro-batched external calls: ``prepare(...)`` (decode + validate), the engine
  calls the model server however it likes (``x`` of the prepared batch), then ``finish(prepared,
  output, ...)`` or ``fail(prepared, error)``.

Tensors: a batch carries the model's only input (``DataBatch.input``) or one tensor per input name
(``DataBatch.inputs``); ``x`` is then an array or a ``{name: array}`` dict (serving.models.spec).
The output goes back the way the input came: ``output``, or ``outputs`` by name when the batch was
named or the model has several outputs.

Stamps (ScoringFacts) mean the same in every engine:

- worker_receive_ns: wall clock when the engine handed the record to the operator;
- decode_ns / inference_ns / encode_ns: perf-counter durations of each step (inference = the
  scorer call; for external serving the client call, with the server's own inference and queue
  time in server_inference_ns / server_queue_ns; encode = building the output message, its final
  serialization happens after worker_send_ns);
- worker_send_ns: wall clock just before the output is serialized and handed to the producer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from crayfish.codec import Codec, CodecError
from crayfish.tensor import TensorError, arrays_from, fill_named, from_tensor, to_tensor
from crayfish.v1 import batch_pb2
from serving.models.spec import FeedError, ModelSpec, check_feeds

# Dead-letter reasons (machine-readable; the detail string says more).
DECODE_ERROR = "decode_error"
BAD_SHAPE = "bad_shape"
BAD_DTYPE = "bad_dtype"
UNKNOWN_MODEL = "unknown_model"
SCORING_ERROR = "scoring_error"


@dataclass
class OpResult:
    """Either ``value`` for the output topic or ``dead_letter`` for the dead-letter topic."""

    value: bytes | None
    headers: list
    dead_letter: bytes | None = None
    reason: str = ""
    # (batch_id, received_ns, decode_ns, inference_ns, encode_ns, send_ns) of a scored batch, for
    # tracing (observability.wiring) without timing anything twice.
    timing: tuple | None = None


@dataclass
class Prepared:
    """A decoded, validated batch waiting for its scores."""

    batch: batch_pb2.DataBatch
    x: np.ndarray | dict
    value: bytes
    received_ns: int
    decode_ns: int
    input_append_ms: int
    topic: str
    partition: int
    offset: int
    started: int = 0  # perf counter when the scoring call started
    attempts: int = 0
    # Sampled batches scored by an external server: (trace_id, incoming parent span, span id base)
    # from observability.context.client_traceparent; the call carries the worker's score span as its parent.
    trace: tuple | None = None
    named: bool = False     # the batch came with named inputs: the output goes back named


class ScoringOperator:
    def __init__(self, codec: Codec, scorer, model_name: str, input_shape: tuple | ModelSpec, worker_id: str,
                 engine: str, backend: str | None = None):
        """``scorer``: an embedded backend (serving.embedded), or None when the engine calls an
        external server itself (then give ``backend``, the name reported in ScoringFacts).
        ``input_shape``: the model's :class:`ModelSpec` (what workers pass), or the item shape of a
        model with one float32 input and one output."""
        self.codec = codec
        self.scorer = scorer
        self.model_name = model_name
        if not isinstance(input_shape, ModelSpec):
            input_shape = ModelSpec(model_name, tuple(input_shape), "float32", ())
        self.spec = input_shape
        # One float32 input: the single-tensor checks inline (the hot path of the paper's models).
        self._simple = not self.spec.multi_input and self.spec.input_dtype == "float32"
        self.input_shape = tuple(self.spec.input_shape)
        self._one_name = None if self.spec.multi_input else self.spec.input_name
        self.item_size = int(np.prod(self.input_shape))
        # The operator validates dtype and shape itself (to dead-letter with a reason), so it calls
        # the backend's unchecked hot path.
        self._score = getattr(scorer, "_score", None) or getattr(scorer, "score", None)
        self.worker_id = worker_id
        self.engine = engine
        self.backend = backend or scorer.name
        # Codecs that flatten each data point (crayfish-json without our shape header) get the
        # model's per-item shape re-imposed, as the original's adapters did.
        self.reshape_flat = codec.name == "crayfish-json"

    def process(self, value: bytes | None, headers, input_append_ms: int, topic: str, partition: int,
                offset: int) -> OpResult:
        prep = self.prepare(value, headers, input_append_ms, topic, partition, offset)
        if isinstance(prep, OpResult):
            return prep
        t1 = time.perf_counter_ns()
        try:
            y = self._score(prep.x)
        except Exception as exc:  # noqa: BLE001 - any backend failure is dead-lettered, never fatal
            return self.fail(prep, f"{type(exc).__name__}: {exc}")
        return self.finish(prep, y, time.perf_counter_ns() - t1)

    def prepare(self, value: bytes | None, headers, input_append_ms: int, topic: str, partition: int,
                offset: int) -> Prepared | OpResult:
        received = time.time_ns()
        t0 = time.perf_counter_ns()
        named = False
        try:
            batch = self.codec.decode_batch(value or b"", headers)
            if batch.inputs:
                x, named = self._named_input(batch.inputs), True
            else:
                x = from_tensor(batch.input)
        except (CodecError, TensorError) as exc:
            return self._dead(DECODE_ERROR, str(exc), value, None, topic, partition, offset,
                              input_append_ms, received)
        if not batch.batch_id:
            batch.batch_id = f"{topic}/{partition}/{offset}"
        if not batch.model:
            batch.model = self.model_name
        if batch.model != self.model_name:
            return self._dead(UNKNOWN_MODEL, f"model {batch.model!r} is not served here (serving "
                              f"{self.model_name!r})", value, batch, topic, partition, offset,
                              input_append_ms, received)
        if not self._simple or isinstance(x, dict):
            try:
                x = check_feeds(self.spec, x)
            except FeedError as exc:
                return self._dead(exc.reason, str(exc), value, batch, topic, partition, offset,
                                  input_append_ms, received)
        elif x.dtype != np.float32:
            return self._dead(BAD_DTYPE, f"expected float32 input, got {x.dtype}", value, batch, topic,
                              partition, offset, input_append_ms, received)
        elif x.shape[1:] != self.input_shape:
            if self.reshape_flat and x.ndim >= 1 and x.size == x.shape[0] * self.item_size:
                x = x.reshape((x.shape[0],) + self.input_shape)
            else:
                return self._dead(BAD_SHAPE, f"expected shape [batch, {', '.join(map(str, self.input_shape))}]"
                                  f", got {list(x.shape)}", value, batch, topic, partition, offset,
                                  input_append_ms, received)
        return Prepared(batch, x, value or b"", received, time.perf_counter_ns() - t0, input_append_ms,
                        topic, partition, offset, named=named)

    def _named_input(self, inputs):
        """A one-input model's tensor sent under its name: the array, checked as a single tensor is
        (the named contract then costs one map lookup); else ``{name: array}`` for check_feeds."""
        if self._one_name is not None and len(inputs) == 1 and self._one_name in inputs:
            return from_tensor(inputs[self._one_name])
        return arrays_from(inputs)

    def finish(self, prep: Prepared, y: np.ndarray | dict, inference_ns: int, server_inference_ns: int = 0,
               server_queue_ns: int = 0, server: str = "") -> OpResult:
        t2 = time.perf_counter_ns()
        batch = prep.batch
        out = batch_pb2.ScoredBatch(
            batch_id=batch.batch_id, run_id=batch.run_id, sequence=batch.sequence,
            intended_ns=batch.intended_ns, created_ns=batch.created_ns, model=batch.model,
            input_append_ms=prep.input_append_ms)
        if batch.attributes:
            out.attributes.update(batch.attributes)
        try:
            if isinstance(y, dict):
                fill_named(out.outputs, y)
            elif prep.named:
                to_tensor(y, out.outputs[self.spec.output_name])
            else:
                to_tensor(y, out.output)
        except (TensorError, AttributeError, TypeError) as exc:
            return self.fail(prep, f"bad output from {self.backend}: {exc}")
        facts = out.facts
        facts.backend = self.backend
        facts.worker_id = self.worker_id
        facts.engine = self.engine
        facts.worker_receive_ns = prep.received_ns
        facts.decode_ns = prep.decode_ns
        facts.inference_ns = inference_ns
        if server_inference_ns:
            facts.server_inference_ns = server_inference_ns
        if server_queue_ns:
            facts.server_queue_ns = server_queue_ns
        if server:
            facts.server = server
        facts.encode_ns = encode_ns = time.perf_counter_ns() - t2
        facts.worker_send_ns = send_ns = time.time_ns()
        try:
            value_out, headers_out = self.codec.encode_scored(out, batch)
        except CodecError as exc:
            return self.fail(prep, f"cannot encode output: {exc}")
        return OpResult(value_out, headers_out, timing=(batch.batch_id, prep.received_ns, prep.decode_ns,
                                                        inference_ns, encode_ns, send_ns))

    def fail(self, prep: Prepared, detail: str, reason: str = SCORING_ERROR) -> OpResult:
        """Dead-letter a prepared batch (the scorer or server failed, after any retries)."""
        return self._dead(reason, detail, prep.value, prep.batch, prep.topic, prep.partition, prep.offset,
                          prep.input_append_ms, prep.received_ns)

    def _dead(self, reason, detail, value, batch, topic, partition, offset, input_append_ms,
              received) -> OpResult:
        dl = batch_pb2.DeadLetter(reason=reason, detail=detail[:2000], source_topic=topic,
                                  source_partition=partition, source_offset=offset,
                                  payload=value or b"", input_append_ms=input_append_ms)
        if batch is not None:
            dl.batch_id = batch.batch_id
            dl.run_id = batch.run_id
            dl.created_ns = batch.created_ns
            dl.intended_ns = batch.intended_ns
        dl.facts.backend = self.backend
        dl.facts.worker_id = self.worker_id
        dl.facts.engine = self.engine
        dl.facts.worker_receive_ns = received
        dl.facts.error = detail[:2000]
        dl.facts.worker_send_ns = time.time_ns()
        return OpResult(None, [], dl.SerializeToString(), reason)
