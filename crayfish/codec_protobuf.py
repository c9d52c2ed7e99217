"""``protobuf`` (the default codec): the record value is the serialized ``crayfish.v1`` message;
no headers."""

from __future__ import annotations

from google.protobuf.message import DecodeError

from crayfish.codec_base import Codec, CodecError
from crayfish.v1 import batch_pb2


class ProtobufCodec(Codec):
    name = "protobuf"

    def encode_batch(self, batch):
        return batch.SerializeToString(), []

    def decode_batch(self, value, headers=None):
        msg = batch_pb2.DataBatch()
        try:
            msg.ParseFromString(value)
        except (DecodeError, TypeError) as exc:
            raise CodecError(f"not a crayfish.v1.DataBatch: {exc}") from None
        return msg

    def encode_scored(self, scored, source=None):
        return scored.SerializeToString(), []

    def decode_scored(self, value, headers=None):
        msg = batch_pb2.ScoredBatch()
        try:
            msg.ParseFromString(value)
        except (DecodeError, TypeError) as exc:
            raise CodecError(f"not a crayfish.v1.ScoredBatch: {exc}") from None
        return msg
