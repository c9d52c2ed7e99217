"""Smoke test of ``python -m benchmarks``: the codec part only (no broker), shape of bench.json.

No timing is asserted: the bench reports numbers, it never judges them in tests.
"""

from __future__ import annotations

import json

from benchmarks.__main__ import main


def test_codec_part_writes_bench_files(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--quick", "--only", "codec", "--quiet"]) == 0
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["quick"] is True
    assert bench["settings"]["parts"] == ["codec"]
    assert {"cpu_count", "platform", "python"} <= set(bench["host"])
    codec = bench["results"]["codec"]
    assert "error" not in codec, codec.get("traceback")
    assert codec["input"]["shape"] == [8, 224, 224, 3]
    for name in ("protobuf", "crayfish_json"):
        assert codec[name]["round_trip_equal"] is True
        assert codec[name]["total_ms_median"] > 0
        assert codec[name]["value_bytes"] > 0
    assert codec["ratio_json_to_protobuf"] > 0
    assert codec["naive_python_json"]["round_trip_equal"] is True
    assert codec["ratio_naive_json_to_protobuf"] > 0
    assert "goal_met" in codec
    md = (tmp_path / "bench.md").read_text()
    assert "naive Python JSON / protobuf" in md
    assert "naive Python JSON / protobuf" in capsys.readouterr().out


def test_contract_part_compares_single_and_named_tensors(tmp_path):
    assert main(["--out", str(tmp_path), "--quick", "--only", "contract", "--quiet"]) == 0
    con = json.loads((tmp_path / "bench.json").read_text())["results"]["contract"]
    assert "error" not in con, con.get("traceback")
    assert [p["batch_size"] for p in con["points"]] == [1, 64]
    for p in con["points"]:
        for kind in ("single", "named"):
            assert p[kind]["worker_us_median"] > 0 and p[kind]["generator_us_median"] > 0
            assert len(p[kind]["round_total_us_medians"]) == p["rounds"]
        assert p["overhead_pct"] == (p["named"]["total_us_median"] - p["single"]["total_us_median"]) \
            / p["single"]["total_us_median"] * 100
    assert "single-tensor -> named-tensor contract" in (tmp_path / "bench.md").read_text()
