"""Client of our ``crayfish.v1.Scoring`` gRPC service (serving/scoring)."""

from __future__ import annotations

import concurrent.futures as cf
import itertools

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crayfish.tensor import arrays_from, fill_named, from_tensor, numpy_dtype, to_tensor
from crayfish.v1 import scoring_pb2, scoring_pb2_grpc
from serving.clients.base import ClientResult, ExternalClient, grpc_channel
from serving.errors import error_from_status

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _trace_metadata(traceparent: str | None):
    return (("traceparent", traceparent),) if traceparent else None


class ScoringClient(ExternalClient):
    kind = "scoring"
    server = "crayfish-scoring"

    def __init__(self, target: str, model: str, timeout_s: float = 5.0, max_in_flight: int = 1,
                 root_cert_file: str | None = None, **options):
        super().__init__(target, model, timeout_s=timeout_s, max_in_flight=max_in_flight, **options)
        self._channel = grpc_channel(target, MAX_MESSAGE_BYTES, root_cert_file)
        self._stub = scoring_pb2_grpc.ScoringStub(self._channel)
        self._ids = itertools.count()

    def _request(self, x) -> scoring_pb2.ScoreRequest:
        req = scoring_pb2.ScoreRequest(model=self.model, request_id=str(next(self._ids)))
        if isinstance(x, dict):
            fill_named(req.inputs, x)
        else:
            to_tensor(x, req.input)
        return req

    @staticmethod
    def _result(resp: scoring_pb2.ScoreResponse) -> ClientResult:
        # `server` is what the server says it is (our server: "crayfish-scoring", Ray Serve's
        # deployment: "ray-serve <version>"); never filled in here, so an answer from a server
        # that names nobody (or the wrong one) shows as such in the run record.
        output = arrays_from(resp.outputs) if resp.outputs else from_tensor(resp.output)
        return ClientResult(output=output, server_inference_ns=resp.inference_ns,
                            server_queue_ns=resp.queue_ns, server=resp.server)

    def score(self, x: np.ndarray, traceparent: str | None = None) -> ClientResult:
        try:
            return self._result(self._stub.Score(self._request(x), timeout=self.timeout_s,
                                                 metadata=_trace_metadata(traceparent)))
        except grpc.RpcError as exc:
            raise error_from_status(exc.code(), exc.details()) from None

    def score_async(self, x: np.ndarray, traceparent: str | None = None) -> cf.Future:
        """Native gRPC future, adapted to a concurrent.futures.Future of ClientResult."""
        out: cf.Future = cf.Future()
        call = self._stub.Score.future(self._request(x), timeout=self.timeout_s,
                                       metadata=_trace_metadata(traceparent))

        def done(c):
            try:
                out.set_result(self._result(c.result()))
            except grpc.RpcError as exc:
                out.set_exception(error_from_status(exc.code(), exc.details()))
            except Exception as exc:  # noqa: BLE001 - delivered to the caller
                out.set_exception(exc)

        call.add_done_callback(done)
        return out

    def score_stream(self, xs: list[np.ndarray]) -> list[ClientResult]:
        """One ScoreStream call; answers may arrive out of order and are matched by request_id."""
        requests = [self._request(x) for x in xs]
        by_id: dict[str, ClientResult] = {}
        try:
            for resp in self._stub.ScoreStream(iter(requests), timeout=self.timeout_s * max(1, len(xs))):
                by_id[resp.request_id] = self._result(resp)
        except grpc.RpcError as exc:
            raise error_from_status(exc.code(), exc.details()) from None
        return [by_id[r.request_id] for r in requests]

    def health(self) -> bool:
        r = health_pb2_grpc.HealthStub(self._channel).Check(
            health_pb2.HealthCheckRequest(service="crayfish.v1.Scoring"), timeout=min(self.timeout_s, 5.0))
        return r.status == health_pb2.HealthCheckResponse.SERVING

    def describe(self) -> dict:
        try:
            d = self._stub.DescribeModel(scoring_pb2.DescribeModelRequest(model=self.model), timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise error_from_status(exc.code(), exc.details()) from None

        def specs(items):
            return [{"name": t.name, "dtype": numpy_dtype(t.dtype).name, "shape": list(t.shape)} for t in items]

        return {"model": d.model, "backend": d.backend, "inputs": specs(d.inputs), "outputs": specs(d.outputs)}

    def close(self) -> None:
        super().close()
        self._channel.close()


CLIENTS = (ScoringClient,)
