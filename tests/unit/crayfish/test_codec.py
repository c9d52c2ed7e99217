"""Kafka payload codecs: protobuf and crayfish-json (the original Crayfish JSON message)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from crayfish import codec_json
from crayfish.codec import CodecError, ProtobufCodec, codecs, get_codec
from crayfish.codec_json import CrayfishJsonCodec
from crayfish.java_float import java_float_string, java_float_string_exact, java_float_strings
from crayfish.tensor import DTYPE_NAMES, from_tensor, to_tensor
from crayfish.v1 import batch_pb2

RNG = np.random.default_rng(20240611)
CREATED_NS = 1_700_000_000_123_456_789


def _tensor(array: np.ndarray, out) -> None:
    to_tensor(array, out)
    assert list(out.shape) == list(array.shape)  # 0-d stays 0-d


def _batch(array: np.ndarray, **fields) -> batch_pb2.DataBatch:
    defaults = dict(batch_id="run1-000042", run_id="run1", sequence=42, intended_ns=CREATED_NS - 5_000,
                    created_ns=CREATED_NS, model="ffnn")
    defaults.update(fields)
    batch = batch_pb2.DataBatch(**defaults)
    batch.attributes["workload"] = "open-loop"
    _tensor(array, batch.input)
    return batch


def _scored(array: np.ndarray, **fields) -> batch_pb2.ScoredBatch:
    defaults = dict(batch_id="run1-000042", run_id="run1", sequence=42, intended_ns=CREATED_NS - 5_000,
                    created_ns=CREATED_NS, model="ffnn", input_append_ms=1_700_000_000_200)
    defaults.update(fields)
    scored = batch_pb2.ScoredBatch(**defaults)
    scored.facts.backend = "onnxruntime"
    scored.facts.worker_id = "w-1"
    scored.facts.worker_receive_ns = CREATED_NS + 1_000
    scored.facts.inference_ns = 12_345
    scored.facts.engine = "kafka"
    _tensor(array, scored.output)
    return scored


def _random(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return np.asarray(RNG.integers(0, 2, shape)).astype(bool)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return RNG.integers(info.min, info.max, shape, dtype=dt, endpoint=True)
    arr = np.asarray(RNG.standard_normal(shape) * 100).astype(dt)
    flat = arr.reshape(-1)
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, np.finfo(dt).max, np.finfo(dt).tiny], dtype=dt)
    flat[:min(flat.size, specials.size)] = specials[:flat.size]
    return arr


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shape, dtype and bits (NaN == NaN; -0.0 != 0.0)."""
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------

def test_registry():
    assert isinstance(get_codec("protobuf"), ProtobufCodec)
    assert isinstance(get_codec("crayfish-json"), CrayfishJsonCodec)
    assert set(codecs()) == {"protobuf", "crayfish-json"}
    with pytest.raises(CodecError, match="unknown codec"):
        get_codec("avro")


@pytest.mark.parametrize("first", ["crayfish.codec_json", "crayfish.codec_protobuf", "crayfish.codec_base",
                                   "crayfish.java_float", "crayfish.codec"])
def test_codec_modules_can_be_imported_first(first):
    # The registry imports the codecs, which import only the base: any module may come first.
    code = (f"import {first}; import crayfish.codec as c, crayfish.codec_json as j; "
            "assert type(c.codecs()['crayfish-json']) is j.CrayfishJsonCodec; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


# ---------------------------------------------------------------------------------------------
# protobuf
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", sorted(DTYPE_NAMES))
@pytest.mark.parametrize("shape", [(), (1,), (7,), (0, 784), (1, 1, 784), (3, 2, 5)])
def test_protobuf_round_trip(dtype, shape):
    codec = get_codec("protobuf")
    arr = _random(dtype, shape)
    batch = _batch(arr)
    value, headers = codec.encode_batch(batch)
    assert headers == []
    back = codec.decode_batch(value, headers)
    assert back == batch
    assert _same(from_tensor(back.input), arr)

    scored = _scored(arr)
    value, headers = codec.encode_scored(scored, batch)
    back = codec.decode_scored(value, headers)
    assert back == scored
    assert _same(from_tensor(back.output), arr)


def test_protobuf_round_trip_large():
    codec = get_codec("protobuf")
    arr = RNG.standard_normal((8, 224, 224, 3)).astype(np.float32)
    back = codec.decode_batch(*codec.encode_batch(_batch(arr, model="resnet50")))
    assert back.model == "resnet50"
    assert _same(from_tensor(back.input), arr)


@pytest.mark.parametrize("value", [b"\xff\xff\xff", b"\x0a\x05ab", "not bytes"])
def test_protobuf_decode_errors(value):
    codec = get_codec("protobuf")
    with pytest.raises(CodecError):
        codec.decode_batch(value)
    with pytest.raises(CodecError):
        codec.decode_scored(value)


# ---------------------------------------------------------------------------------------------
# Java Float.toString
# ---------------------------------------------------------------------------------------------

# (value, what JDK 19+ Float.toString prints). Those marked * differ on JDK <= 18, which printed
# a non-shortest string; all others were checked against OpenJDK 17.
JAVA_FLOATS = [
    (0.1, "0.1"), (1.0, "1.0"), (-2.5, "-2.5"), (1e-05, "1.0E-5"), (12345678.0, "1.2345678E7"),
    (0.0, "0.0"), (-0.0, "-0.0"), (0.001, "0.001"), (9.999999e-4, "9.999999E-4"), (1e7, "1.0E7"),
    (9999999.0, "9999999.0"), (123.0, "123.0"), (100.0, "100.0"), (0.00123, "0.00123"), (0.3, "0.3"),
    (1.2345679e7, "1.2345679E7"), (0.25, "0.25"), (-1234.5, "-1234.5"), (3.0e-12, "3.0E-12"),
    (np.float32(1 / 3), "0.33333334"), (16777216.0, "1.6777216E7"), (2.0 ** -20, "9.536743E-7"),
    (1.4e-45, "1.4E-45"), (-3.4028235e38, "-3.4028235E38"), (float("nan"), "NaN"),
    (float("inf"), "Infinity"), (float("-inf"), "-Infinity"), (1e22, "1.0E22"), (5e-13, "5.0E-13"),
    (1.1754944e-38, "1.1754944E-38"),  # * JDK 17: 1.17549435E-38 (Float.MIN_NORMAL)
    (1e11, "1.0E11"),  # * JDK 17: 9.9999998E10
    (1e-43, "9.9E-44"),  # * JDK 17: 1.0E-43; JDK 19+ picks the closest of the 1- and 2-digit decimals
]


@pytest.mark.parametrize("value,expected", JAVA_FLOATS)
def test_java_float_string(value, expected):
    assert java_float_string(value) == expected
    # The vectorised path and the exact scalar implementation of the JDK spec agree.
    assert java_float_string_exact(np.float32(value)) == expected


def test_java_float_strings_match_exact_oracle():
    bits = RNG.integers(0, 2 ** 32, 3000, dtype=np.uint64).astype(np.uint32)
    values = np.concatenate([bits.view(np.float32), RNG.standard_normal(3000).astype(np.float32),
                             (RNG.random(3000) * 1e-6).astype(np.float32),
                             (RNG.integers(0, 256, 3000) / 255.0).astype(np.float32)])
    got = java_float_strings(values)
    assert got == [java_float_string_exact(v) for v in values]
    back = np.array(got, dtype=np.float32)
    finite = ~np.isnan(values)
    assert back[finite].tobytes() == values[finite].tobytes()


JAVA_SRC = """
import java.nio.*; import java.nio.file.*;
public class FloatStrings {
  public static void main(String[] a) throws Exception {
    FloatBuffer fb = ByteBuffer.wrap(Files.readAllBytes(Paths.get(a[0]))).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer();
    StringBuilder sb = new StringBuilder();
    while (fb.hasRemaining()) sb.append(fb.get()).append(',');
    System.out.print(sb);
  }
}
"""


def test_data_point_matches_a_real_jvm(tmp_path):
    """On ordinary data every JDK agrees with the shortest form, so the bytes must be identical."""
    values = np.concatenate([
        RNG.standard_normal(20_000).astype(np.float32),
        RNG.random(20_000).astype(np.float32),
        ((RNG.integers(0, 256, 20_000) / 255.0 - 0.485) / 0.229).astype(np.float32),
        np.arange(-500, 500, dtype=np.float32) / 8,
        np.array([v for v, _ in JAVA_FLOATS[:-3]], dtype=np.float32),
    ])
    (tmp_path / "FloatStrings.java").write_text(JAVA_SRC)
    subprocess.run(["javac", "FloatStrings.java"], cwd=tmp_path, check=True, timeout=60)
    values.astype("<f4").tofile(tmp_path / "in.bin")
    java = subprocess.run(["java", "-cp", str(tmp_path), "FloatStrings", str(tmp_path / "in.bin")],
                          capture_output=True, text=True, check=True, timeout=60).stdout
    assert codec_json.format_data_point(values) == java


# ---------------------------------------------------------------------------------------------
# crayfish-json
# ---------------------------------------------------------------------------------------------

SMALL = np.array([[0.1, 1.0, -2.5], [1e-05, 12345678.0, 0.0]], dtype=np.float32)
SMALL_JSON = (b'{"creationTimestamp":1700000000123,"dataPointSz1":2,"dataPointSz2":3,'
              b'"dataPoint":"0.1,1.0,-2.5,1.0E-5,1.2345678E7,0.0,","prediction":null}')


def test_json_encode_exact_bytes():
    codec = get_codec("crayfish-json")
    value, headers = codec.encode_batch(_batch(SMALL))
    assert value == SMALL_JSON
    assert headers == [
        ("crayfish-batch-id", b"run1-000042"),
        ("crayfish-run-id", b"run1"),
        ("crayfish-sequence", b"42"),
        ("crayfish-intended-ns", str(CREATED_NS - 5_000).encode()),
        ("crayfish-created-ns", str(CREATED_NS).encode()),
        ("crayfish-model", b"ffnn"),
        ("crayfish-shape", b"2,3"),
        ("crayfish-attr-workload", b"open-loop"),
    ]
    # Jackson's compact layout is what json.dumps writes with these separators.
    doc = json.loads(value)
    assert list(doc) == ["creationTimestamp", "dataPointSz1", "dataPointSz2", "dataPoint", "prediction"]
    assert json.dumps(doc, separators=(",", ":")).encode() == value


def test_json_decode_exact_example():
    back = get_codec("crayfish-json").decode_batch(SMALL_JSON, None)
    assert _same(from_tensor(back.input), SMALL)
    assert back.created_ns == 1_700_000_000_123_000_000
    assert (back.batch_id, back.run_id, back.model, back.sequence, back.intended_ns) == ("", "", "", 0, 0)


def test_json_decode_message_from_the_original_producer():
    # As the original Java producer writes it: no headers, a 1x784 MNIST-style data point.
    pixels = np.round(RNG.random(784), 3).astype(np.float32)
    text = "".join(f"{java_float_string(v)}," for v in pixels)
    value = ('{"creationTimestamp":1690000000000,"dataPointSz1":1,"dataPointSz2":784,'
             f'"dataPoint":"{text}","prediction":null}}').encode()
    codec = get_codec("crayfish-json")
    for headers in (None, []):
        back = codec.decode_batch(value, headers)
        arr = from_tensor(back.input)
        assert arr.shape == (1, 784) and arr.dtype == np.float32
        assert _same(arr, pixels.reshape(1, 784))
        assert back.created_ns == 1_690_000_000_000 * 1_000_000
        assert back.batch_id == "" and back.model == "" and not back.attributes
    # Re-encoding gives the producer's bytes back (the timestamp is kept to the millisecond).
    assert codec.encode_batch(codec.decode_batch(value))[0] == value


@pytest.mark.parametrize("shape", [(), (5,), (0, 784), (1, 784), (1, 1, 784), (4, 3, 2), (8, 10)])
def test_json_round_trip_shapes(shape):
    codec = get_codec("crayfish-json")
    arr = _random("float32", shape)
    batch = _batch(arr)
    value, headers = codec.encode_batch(batch)
    doc = json.loads(value)
    rows = 1 if len(shape) < 2 else shape[0]
    assert (doc["dataPointSz1"], doc["dataPointSz2"]) == (rows, arr.size // rows if rows else int(np.prod(shape[1:])))
    back = codec.decode_batch(value, headers)
    assert back == batch  # every field, attributes included, travels via the headers
    # Without our headers the shape is (Sz1, Sz2).
    plain = codec.decode_batch(value)
    assert from_tensor(plain.input).shape == (doc["dataPointSz1"], doc["dataPointSz2"])


def test_json_round_trip_special_values():
    values = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, np.finfo(np.float32).max, -np.finfo(np.float32).tiny,
                       1.4e-45, 1e-43, 3e-39, 1e30, -7.5e-20, 0.1, 65504.0], dtype=np.float32).reshape(2, 7)
    codec = get_codec("crayfish-json")
    value, headers = codec.encode_batch(_batch(values))
    assert b'"dataPoint":"NaN,Infinity,-Infinity,-0.0,0.0,3.4028235E38,-1.17549435E-38' not in value
    assert b'"dataPoint":"NaN,Infinity,-Infinity,-0.0,0.0,3.4028235E38,-1.1754944E-38,1.4E-45,9.9E-44,' in value
    assert _same(from_tensor(codec.decode_batch(value, headers).input), values)


def test_json_round_trip_large_resnet_batch():
    codec = get_codec("crayfish-json")
    arr = RNG.standard_normal((8, 224, 224, 3)).astype(np.float32)
    value, headers = codec.encode_batch(_batch(arr, model="resnet50"))
    assert value.startswith(b'{"creationTimestamp":1700000000123,"dataPointSz1":8,"dataPointSz2":150528,')
    back = codec.decode_batch(value, headers)
    assert back.model == "resnet50"
    assert _same(from_tensor(back.input), arr)


def test_json_shape_header_must_be_consistent():
    codec = get_codec("crayfish-json")
    value, headers = codec.encode_batch(_batch(SMALL))
    other = [(k, b"3,2") if k == "crayfish-shape" else (k, v) for k, v in headers]
    assert from_tensor(codec.decode_batch(value, other).input).shape == (3, 2)
    wrong = [(k, b"1,1,784") if k == "crayfish-shape" else (k, v) for k, v in headers]
    assert from_tensor(codec.decode_batch(value, wrong).input).shape == (2, 3)


def test_json_encode_rejects_what_the_format_cannot_carry():
    codec = get_codec("crayfish-json")
    for dtype in ("float64", "float16", "int32", "uint8", "bool"):
        with pytest.raises(CodecError, match="float32 only"):
            codec.encode_batch(_batch(_random(dtype, (2, 3))))
    with pytest.raises(CodecError, match="no input"):
        codec.encode_batch(batch_pb2.DataBatch(batch_id="x"))
    broken = _batch(SMALL)
    broken.input.data = broken.input.data[:-4]
    with pytest.raises(CodecError, match="bad input tensor"):
        codec.encode_batch(broken)
    with pytest.raises(CodecError, match="source batch"):
        codec.encode_scored(_scored(SMALL), None)
    with pytest.raises(CodecError, match="no output"):
        codec.encode_scored(batch_pb2.ScoredBatch(), _batch(SMALL))


def _doc(**override) -> bytes:
    doc = {"creationTimestamp": 1700000000123, "dataPointSz1": 2, "dataPointSz2": 3,
           "dataPoint": "0.1,1.0,-2.5,1.0E-5,1.2345678E7,0.0,", "prediction": None}
    for key, val in override.items():
        if val is _DROP:
            del doc[key]
        else:
            doc[key] = val
    return json.dumps(doc, separators=(",", ":")).encode()


_DROP = object()

BAD_VALUES = {
    "not json": b"\x00not json",
    "truncated": SMALL_JSON[:-10],
    "json array": b"[1,2,3]",
    "not utf-8": b'{"creationTimestamp":\xff}',
    "missing creationTimestamp": _doc(creationTimestamp=_DROP),
    "missing dataPointSz1": _doc(dataPointSz1=_DROP),
    "missing dataPointSz2": _doc(dataPointSz2=_DROP),
    "missing dataPoint": _doc(dataPoint=_DROP),
    "float size": _doc(dataPointSz1=2.0),
    "string size": _doc(dataPointSz2="3"),
    "bool size": _doc(dataPointSz1=True),
    "negative size": _doc(dataPointSz1=-2, dataPointSz2=-3),
    "size beyond a Java int": _doc(dataPointSz1=0, dataPointSz2=2 ** 40, dataPoint=""),
    "timestamp beyond a Java long": _doc(creationTimestamp=2 ** 63),
    "huge exponent timestamp": _doc(creationTimestamp=1e400),
    "string timestamp": _doc(creationTimestamp="now"),
    "list dataPoint": _doc(dataPoint=[0.1, 1.0]),
    "too few values": _doc(dataPoint="0.1,1.0,-2.5,1.0E-5,1.2345678E7,"),
    "too many values": _doc(dataPoint="0.1,1.0,-2.5,1.0E-5,1.2345678E7,0.0,7.0,"),
    "non-numeric value": _doc(dataPoint="0.1,1.0,abc,1.0E-5,1.2345678E7,0.0,"),
    "trailing garbage": _doc(dataPoint="0.1,1.0,-2.5,1.0E-5,1.2345678E7,0.0x,"),
    "empty value": _doc(dataPoint="0.1,,-2.5,1.0E-5,1.2345678E7,0.0,"),
    "java-unsafe separator": _doc(dataPoint="0.1;1.0;-2.5;1.0E-5;1.2345678E7;0.0;"),
    "non-ascii value": _doc(dataPoint="0.1,1.0,-2.5,1.0E-5,1.2345678E7,0.\u00e9,"),
    "numeric prediction": _doc(prediction=3),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_json_decode_batch_errors(case):
    with pytest.raises(CodecError):
        get_codec("crayfish-json").decode_batch(BAD_VALUES[case], None)


BAD_HEADERS = {
    "sequence not int": [("crayfish-sequence", b"forty-two")],
    "sequence negative": [("crayfish-sequence", b"-1")],
    "sequence too big": [("crayfish-sequence", str(2 ** 64).encode())],
    "created float": [("crayfish-created-ns", b"1.5e18")],
    "intended out of range": [("crayfish-intended-ns", str(2 ** 63).encode())],
    "shape not ints": [("crayfish-shape", b"2,x")],
    "shape negative": [("crayfish-shape", b"-2,-3")],
    "batch id not utf-8": [("crayfish-batch-id", b"\xff\xfe")],
    "not pairs": [("crayfish-batch-id",)],
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_json_decode_header_errors(case):
    with pytest.raises(CodecError):
        get_codec("crayfish-json").decode_batch(SMALL_JSON, BAD_HEADERS[case])


@pytest.mark.parametrize("value", [None, 42, 1.5])
def test_json_decode_rejects_non_bytes(value):
    with pytest.raises(CodecError):
        get_codec("crayfish-json").decode_batch(value)


def test_json_decode_accepts_harmless_variations():
    codec = get_codec("crayfish-json")
    # No final comma, spaces after commas, no prediction key, headers as a dict, a null header.
    value = (b'{"dataPointSz1":1,"dataPointSz2":3,"creationTimestamp":5,'
             b'"dataPoint":"1.5, -2.0E3, nan"}')
    back = codec.decode_batch(value, {"crayfish-model": b"m", "crayfish-run-id": None})
    arr = from_tensor(back.input)
    assert arr[0, 0] == 1.5 and arr[0, 1] == -2000.0 and np.isnan(arr[0, 2])
    assert back.model == "m" and back.created_ns == 5_000_000
    assert back.input.shape == [1, 3]


# ---------------------------------------------------------------------------------------------
# crayfish-json: scored records
# ---------------------------------------------------------------------------------------------

def test_json_scored_exact_bytes_and_round_trip():
    codec = get_codec("crayfish-json")
    source = _batch(SMALL)
    output = np.array([[0.25, 0.75, -0.0], [1.0e-4, 3.4028235e38, np.nan]], dtype=np.float32)
    scored = _scored(output)
    value, headers = codec.encode_scored(scored, source)
    assert value == (b'{"creationTimestamp":1700000000123,"dataPointSz1":2,"dataPointSz2":3,'
                     b'"dataPoint":"0.1,1.0,-2.5,1.0E-5,1.2345678E7,0.0,",'
                     b'"prediction":"[[0.25, 0.75, -0.0], [1.0E-4, 3.4028235E38, NaN]]"}')
    h = dict(headers)
    assert h["crayfish-batch-id"] == b"run1-000042"
    assert h["crayfish-input-append-ms"] == b"1700000000200"
    assert h["crayfish-shape"] == b"2,3"
    assert batch_pb2.ScoringFacts.FromString(h["crayfish-facts"]) == scored.facts

    back = codec.decode_scored(value, headers)
    assert _same(from_tensor(back.output), output)
    assert back == scored  # ids, stamps, facts, input_append_ms and output all come back


def test_json_scored_output_is_reshaped_to_rows():
    codec = get_codec("crayfish-json")
    logits = RNG.standard_normal((2, 1, 10)).astype(np.float32)
    value, headers = codec.encode_scored(_scored(logits), _batch(SMALL))
    pred = json.loads(value)["prediction"]
    assert pred.startswith("[[") and pred.count("], [") == 1 and pred.count(", ") == 2 * 9 + 1
    back = codec.decode_scored(value, headers)
    assert _same(from_tensor(back.output), logits.reshape(2, 10))
    # Integer outputs (e.g. class ids) print as Java floats.
    value, _ = codec.encode_scored(_scored(np.array([3, 7], dtype=np.int64)), _batch(SMALL))
    assert json.loads(value)["prediction"] == "[[3.0], [7.0]]"


def test_json_scored_without_headers_falls_back_to_the_message():
    codec = get_codec("crayfish-json")
    value = (b'{"creationTimestamp":1690000000000,"dataPointSz1":2,"dataPointSz2":2,'
             b'"dataPoint":"1.0,2.0,3.0,4.0,","prediction":"[[0.1, 0.9], [0.7, 0.3]]"}')
    back = codec.decode_scored(value)
    assert back.created_ns == 1_690_000_000_000_000_000
    assert back.batch_id == "" and not back.HasField("facts") and back.input_append_ms == 0
    assert _same(from_tensor(back.output), np.array([[0.1, 0.9], [0.7, 0.3]], dtype=np.float32))


def test_json_scored_echoes_the_received_data_point():
    codec = get_codec("crayfish-json")
    # A JDK 17 producer's non-shortest digits: echoed as received, not re-formatted.
    value = (b'{"creationTimestamp":1,"dataPointSz1":1,"dataPointSz2":2,'
             b'"dataPoint":"9.9999998E10,1.17549435E-38,","prediction":null}')
    source = codec.decode_batch(value)
    out, _ = codec.encode_scored(_scored(np.array([[1.0]], dtype=np.float32)), source)
    assert b'"dataPoint":"9.9999998E10,1.17549435E-38,"' in out
    # Whitespace the parser skipped is echoed too, JSON-escaped.
    odd = b'{"creationTimestamp":1,"dataPointSz1":1,"dataPointSz2":2,"dataPoint":"1.0,\\n 2.0,"}'
    out, _ = codec.encode_scored(_scored(np.array([[1.0]], dtype=np.float32)), codec.decode_batch(odd))
    assert json.loads(out)["dataPoint"] == "1.0,\n 2.0,"
    # A batch changed after decoding is re-formatted from its tensor.
    source = codec.decode_batch(value)
    to_tensor(np.array([[1e11, 2.0]], dtype=np.float32), source.input)
    out, _ = codec.encode_scored(_scored(np.array([[1.0]], dtype=np.float32)), source)
    assert b'"dataPoint":"1.0E11,2.0,"' in out


@pytest.mark.parametrize("prediction,shape", [("[]", (0, 0)), ("[[]]", (1, 0)), ("[[], []]", (2, 0)),
                                              ("[[1.0]]", (1, 1)), ("[[1.0, 2.0, 3.0]]", (1, 3))])
def test_json_prediction_shapes(prediction, shape):
    assert codec_json.parse_prediction(prediction).shape == shape


BAD_SCORED = {
    "null prediction": SMALL_JSON,
    "ragged rows": _doc(prediction="[[1.0, 2.0], [3.0]]"),
    "flat list": _doc(prediction="[1.0, 2.0]"),
    "not a list": _doc(prediction="cat"),
    "non-numeric": _doc(prediction="[[1.0, dog]]"),
    "nested too deep": _doc(prediction="[[[1.0]]]"),
    "unclosed": _doc(prediction="[[1.0, 2.0]"),
}


@pytest.mark.parametrize("case", sorted(BAD_SCORED))
def test_json_decode_scored_errors(case):
    with pytest.raises(CodecError):
        get_codec("crayfish-json").decode_scored(BAD_SCORED[case])


def test_json_decode_scored_bad_facts_header():
    value = _doc(prediction="[[1.0]]")
    with pytest.raises(CodecError, match="crayfish-facts"):
        get_codec("crayfish-json").decode_scored(value, [("crayfish-facts", b"\xff\xff\xff")])
    with pytest.raises(CodecError, match="crayfish-input-append-ms"):
        get_codec("crayfish-json").decode_scored(value, [("crayfish-input-append-ms", b"soon")])


# ---------------------------------------------------------------------------------------------
# The echo key: matching an output that lost its headers (crayfish.codec_json docstring)
# ---------------------------------------------------------------------------------------------

def _generator_key(codec, batch) -> str:
    return codec.echo_key(batch.created_ns, codec.input_fingerprint(batch))


def _echoed(value: bytes, data_point: str | None = None, creation_ms: int | None = None) -> bytes:
    """The output value a header-less pipeline writes: the input's document echoed with a prediction,
    optionally re-printing the dataPoint or another creationTimestamp."""
    doc = json.loads(value)
    doc["prediction"] = "[[0.25, 0.75]]"
    if data_point is not None:
        doc["dataPoint"] = data_point
    if creation_ms is not None:
        doc["creationTimestamp"] = creation_ms
    return json.dumps(doc, separators=(",", ":")).encode()


def test_echo_key_of_the_sent_batch_equals_the_key_of_its_echoed_output():
    codec = get_codec("crayfish-json")
    batch = _batch(SMALL)
    value, _ = codec.encode_batch(batch)
    key = _generator_key(codec, batch)
    assert key.startswith("1700000000123:")          # the creationTimestamp the record carries
    assert codec.output_echo_key(_echoed(value)) == key
    # our own worker's output (headers dropped) echoes the same
    out, _ = codec.encode_scored(_scored(np.array([[0.5]], dtype=np.float32)), codec.decode_batch(value))
    assert codec.output_echo_key(out) == key
    # a pipeline that re-prints the floats its own way: "1" for 1.0, "1e-05" for 1.0E-5, "-0" ...
    reprinted = "0.1,1,-2.5,0.00001,12345678,0,"
    assert codec.output_echo_key(_echoed(value, reprinted)) == key
    assert codec.output_echo_key(_echoed(value, " 0.100000001 , 1.0 ,-2.50,1e-05,1.2345678e+07,-0.0")) == key


def test_echo_key_differs_for_other_data_another_millisecond_or_another_shape():
    codec = get_codec("crayfish-json")
    value, _ = codec.encode_batch(_batch(SMALL))
    key = codec.output_echo_key(_echoed(value))
    assert codec.output_echo_key(_echoed(value, "0.1,1.0,-2.5,1.0E-5,1.2345678E7,1.0E-45,")) != key  # one ulp
    assert codec.output_echo_key(_echoed(value, creation_ms=1700000000124)) != key
    other_shape = _batch(SMALL.reshape(3, 2))
    assert _generator_key(codec, other_shape) != _generator_key(codec, _batch(SMALL))
    assert codec_json.data_fingerprint(2, 3, SMALL) == codec_json.data_fingerprint(2, 3, SMALL.astype(np.float64))
    nans = np.array([np.nan, -np.nan, 0.0, -0.0], dtype=np.float32)
    assert codec_json.data_fingerprint(1, 4, nans) == codec_json.data_fingerprint(1, 4, np.array(
        [np.nan, np.nan, 0.0, 0.0], dtype=np.float32))
    assert codec_json.echo_key(5, "ab") == "5:ab"


def test_protobuf_outputs_carry_their_ids_so_no_echo_key():
    pb = get_codec("protobuf")
    batch = _batch(SMALL)
    assert pb.input_fingerprint(batch) is None and pb.echo_key(batch.created_ns, None) is None
    assert pb.output_echo_key(batch.SerializeToString()) is None
    assert get_codec("crayfish-json").echo_key(1, None) is None


def test_echo_key_of_a_value_that_is_not_a_crayfish_message_raises_codec_error():
    codec = get_codec("crayfish-json")
    with pytest.raises(CodecError):
        codec.output_echo_key(b"{not json")
    with pytest.raises(CodecError):
        codec.output_echo_key(b'{"creationTimestamp":1,"dataPointSz1":1,"dataPointSz2":2,"dataPoint":"1,"}')
