"""The crayfish.v1 contracts: generated stubs match the .proto files, import, and serve.

Also runs the pinned buf lint / format check (``make test`` installs buf with ``npm ci`` in protos/).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
GEN = REPO / "tools" / "gen_protos.py"


def _gen_module():
    spec = importlib.util.spec_from_file_location("gen_protos", GEN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run_gen(*args: str) -> subprocess.CompletedProcess:
    # Run from another directory: the script must not depend on the cwd.
    return subprocess.run([sys.executable, str(GEN), *args], capture_output=True, text=True, cwd="/")


def test_committed_stubs_match_protos():
    proc = _run_gen("--check")
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout


def test_check_reports_drift_from_modified_protos(tmp_path):
    protos = tmp_path / "protos"
    shutil.copytree(REPO / "protos" / "crayfish", protos / "crayfish")
    batch = protos / "crayfish" / "v1" / "batch.proto"
    text = batch.read_text()
    assert "map<string, string> attributes = 8;" in text
    batch.write_text(text.replace("map<string, string> attributes = 8;",
                                  "map<string, string> attributes = 8;\n  string drift_probe = 99;", 1))
    proc = _run_gen("--check", "--protos", str(protos))
    assert proc.returncode == 1
    assert "differs: crayfish/v1/batch_pb2.py" in proc.stderr
    assert "differs: crayfish/v1/batch_pb2.pyi" in proc.stderr
    assert "tensor_pb2" not in proc.stderr  # untouched files do not drift
    # A new .proto means stubs that are not committed.
    (protos / "crayfish" / "v1" / "extra.proto").write_text(
        'syntax = "proto3";\npackage crayfish.v1;\nmessage Extra {}\n')
    proc = _run_gen("--check", "--protos", str(protos))
    assert proc.returncode == 1
    assert "missing: crayfish/v1/extra_pb2.py" in proc.stderr


def test_generation_is_deterministic_and_prunes_stale_stubs(tmp_path):
    gen = _gen_module()
    out1, out2 = tmp_path / "a", tmp_path / "b"
    files1 = gen.generate(out1)
    gen.generate(out2)
    assert [p.name for p in files1] == sorted(
        f"{stem}{suffix}" for stem in ("batch", "scoring", "tensor") for suffix in gen.GENERATED_SUFFIXES)
    assert gen.drift(out1 / "crayfish" / "v1", out2 / "crayfish" / "v1") == []
    assert gen.drift(out1 / "crayfish" / "v1", REPO / "crayfish" / "v1") == []
    # A committed stub with no .proto behind it is drift, and regeneration removes it.
    stale = out2 / "crayfish" / "v1" / "old_pb2.py"
    stale.write_text("# stale\n")
    [line] = gen.drift(out1 / "crayfish" / "v1", out2 / "crayfish" / "v1")
    assert line.startswith("stale: crayfish/v1/old_pb2.py")
    (out2 / "crayfish" / "v1" / "tensor_pb2.pyi").unlink()
    assert any(line.startswith("missing: crayfish/v1/tensor_pb2.pyi")
               for line in gen.drift(out1 / "crayfish" / "v1", out2 / "crayfish" / "v1"))
    gen.generate(out2)
    assert not stale.exists()
    assert gen.drift(out1 / "crayfish" / "v1", out2 / "crayfish" / "v1") == []


def test_stubs_import_and_describe_the_service():
    from crayfish.v1 import batch_pb2, scoring_pb2, scoring_pb2_grpc, tensor_pb2

    assert batch_pb2.DataBatch.DESCRIPTOR.full_name == "crayfish.v1.DataBatch"
    assert tensor_pb2.DType.Name(tensor_pb2.DTYPE_FLOAT32) == "DTYPE_FLOAT32"
    service = scoring_pb2.DESCRIPTOR.services_by_name["Scoring"]
    assert service.full_name == "crayfish.v1.Scoring"
    methods = {m.name: m for m in service.methods}
    assert set(methods) == {"Score", "ScoreStream", "DescribeModel"}
    assert not methods["Score"].client_streaming and not methods["Score"].server_streaming
    assert methods["ScoreStream"].client_streaming and methods["ScoreStream"].server_streaming
    assert methods["DescribeModel"].output_type.full_name == "crayfish.v1.ModelDescription"
    for name in ("ScoringStub", "ScoringServicer", "add_ScoringServicer_to_server"):
        assert hasattr(scoring_pb2_grpc, name)


def test_grpc_stubs_serve_all_three_rpcs():
    import grpc

    from crayfish.tensor import from_tensor, to_tensor
    from crayfish.v1 import scoring_pb2, scoring_pb2_grpc

    class Doubler(scoring_pb2_grpc.ScoringServicer):
        def Score(self, request, context):
            resp = scoring_pb2.ScoreResponse(model=request.model, request_id=request.request_id, server="test")
            to_tensor(from_tensor(request.input) * 2, resp.output)
            return resp

        def ScoreStream(self, request_iterator, context):
            for request in request_iterator:
                yield self.Score(request, context)

        def DescribeModel(self, request, context):
            return scoring_pb2.ModelDescription(model=request.model, backend="test")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    scoring_pb2_grpc.add_ScoringServicer_to_server(Doubler(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = scoring_pb2_grpc.ScoringStub(channel)
            x = np.arange(6, dtype=np.float32).reshape(2, 3)
            req = scoring_pb2.ScoreRequest(model="m", request_id="r1")
            to_tensor(x, req.input)
            resp = stub.Score(req, timeout=10)
            assert resp.request_id == "r1"
            np.testing.assert_array_equal(from_tensor(resp.output), x * 2)
            ids = [r.request_id for r in stub.ScoreStream(iter([req, req]), timeout=10)]
            assert ids == ["r1", "r1"]
            assert stub.DescribeModel(scoring_pb2.DescribeModelRequest(model="m"), timeout=10).backend == "test"
    finally:
        server.stop(None)


BUF = REPO / "protos" / "node_modules" / ".bin" / "buf"


def test_buf_lint_and_format():
    assert BUF.exists(), "buf is not installed: run `make test` (or `cd protos && npm ci`)"
    lint = subprocess.run([str(BUF), "lint"], cwd=REPO / "protos", capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = subprocess.run([str(BUF), "format", "-d", "--exit-code"], cwd=REPO / "protos",
                         capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


RELEASED = REPO / "protos" / "released" / "crayfish-v1.binpb"


def _buf_breaking(protos_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BUF), "breaking", "--against", str(RELEASED)], cwd=protos_dir,
                          capture_output=True, text=True)


def test_contracts_stay_compatible_with_the_released_ones():
    assert RELEASED.is_file(), "protos/released/crayfish-v1.binpb (the released contract) is missing"
    proc = _buf_breaking(REPO / "protos")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_buf_breaking_catches_a_removed_field(tmp_path):
    protos = tmp_path / "protos"
    shutil.copytree(REPO / "protos" / "crayfish", protos / "crayfish")
    shutil.copy(REPO / "protos" / "buf.yaml", protos / "buf.yaml")
    batch = protos / "crayfish" / "v1" / "batch.proto"
    batch.write_text(batch.read_text().replace("  Tensor input = 7;\n", ""))
    proc = _buf_breaking(protos)
    assert proc.returncode != 0
    assert "input" in proc.stdout + proc.stderr
