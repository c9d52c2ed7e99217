"""GPU check (issue: serving mesh, device cuda): ResNet50, batch 8, closed loop through our Scoring
server, TorchScript backend on cpu (1 thread, the paper's setting) vs cuda; bare torch inference
as the reference. Prepared for a machine with an NVIDIA GPU and torch; run:

    python tools/gpu_check.py --out DIR [--cpu-calls 5] [--gpu-calls 200]

Writes DIR/gpu_check.json. The closed loop here is client -> gRPC -> Scoring server -> backend ->
back (no Kafka: the GPU machine runs no broker); the worker's Kafka hops are measured on the CPU
machines and do not depend on the device.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from crayfish.host.paths import models_dir as default_models_dir
from serving.clients import create_client
from serving.models import build_model, model_paths, reference_forward
from serving.models.export_torch import export_torchscript
from serving.scoring.server import build_server
from serving.scoring.settings import ScoringSettings


def pct(values, q):
    return float(np.percentile(np.asarray(values), q)) if values else None


def closed_loop(target: str, calls: int, x: np.ndarray, warmup: int) -> dict:
    client = create_client("scoring", target, "resnet50", timeout_s=600)
    try:
        for _ in range(warmup):
            client.score(x)
        lat, server_inf = [], []
        for _ in range(calls):
            t0 = time.perf_counter()
            r = client.score(x)
            lat.append((time.perf_counter() - t0) * 1e3)
            server_inf.append(r.server_inference_ns / 1e6)
        return {"calls": calls, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "mean_ms": statistics.mean(lat),
                "server_inference_p50_ms": pct(server_inf, 50), "answered_by": r.server,
                "output_shape": list(r.output.shape)}, r.output
    finally:
        client.close()


def serve(device: str, models_dir: Path, threads: int = 1, allow_tf32: bool = False):
    settings = ScoringSettings(models=["resnet50"], backend="torchscript",
                               backend_options={"device": device, "threads": threads, "interop_threads": 1,
                                                **({"allow_tf32": allow_tf32} if device == "cuda" else {})},
                               models_dir=models_dir, instances=1)
    server, core, port = build_server(settings)
    server.start()
    return server, core, f"127.0.0.1:{port}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpu-calls", type=int, default=5)
    ap.add_argument("--gpu-calls", type=int, default=200)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch  # this script runs in the torch environment only

    models_dir = default_models_dir()
    result: dict = {"python": platform.python_version(), "host_cpus": os.cpu_count(), "torch": torch.__version__,
                    "cuda_available": torch.cuda.is_available(),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    t = time.perf_counter()
    build_model("resnet50", models_dir)
    pt = export_torchscript("resnet50", models_dir)
    result["build_s"] = time.perf_counter() - t
    x = np.random.default_rng(0).random((8, 224, 224, 3), dtype=np.float32)
    result.update(_bare_torch(torch, pt, x))
    print(json.dumps(result), flush=True)
    result.update(_through_the_server(torch, models_dir, x, a.cpu_calls, a.gpu_calls))
    if "scoring_server_cuda" in result:
        gpu_e2e = result["scoring_server_cuda"]["p50_ms"]
        cpu_e2e = result["scoring_server_cpu"]["p50_ms"]
        result["ratio_cuda_over_cpu_e2e"] = gpu_e2e / cpu_e2e
        result["ratio_e2e_gpu_over_bare_gpu"] = gpu_e2e / result["bare_torch_cuda_ms_p50"]
        result["goal_e2e_gpu_le_4x_bare_gpu"] = result["ratio_e2e_gpu_over_bare_gpu"] <= 4
        result["ratio_e2e_gpu_over_1thread_cpu"] = gpu_e2e / cpu_e2e
        result["goal_e2e_gpu_le_0.05x_cpu"] = result["ratio_e2e_gpu_over_1thread_cpu"] <= 0.05
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


def _bare_torch(torch, pt: Path, x: np.ndarray) -> dict:
    """The TorchScript module called directly: one CPU thread, and CUDA with and without TF32."""
    result = {}
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    module = torch.jit.load(str(pt)).eval()
    with torch.inference_mode():
        module(torch.from_numpy(x))
        cpu = []
        for _ in range(3):
            t0 = time.perf_counter()
            module(torch.from_numpy(x))
            cpu.append((time.perf_counter() - t0) * 1e3)
        result["bare_torch_cpu_1thread_ms"] = statistics.median(cpu)
        if torch.cuda.is_available():
            gm = torch.jit.load(str(pt), map_location="cuda").eval()
            for tf32 in (False, True):  # the backend's default is exact fp32 (TF32 off)
                torch.backends.cudnn.allow_tf32 = tf32
                torch.backends.cuda.matmul.allow_tf32 = tf32
                for _ in range(20):
                    gm(torch.from_numpy(x).cuda()).cpu()
                torch.cuda.synchronize()
                gpu = []
                for _ in range(100):
                    t0 = time.perf_counter()
                    gm(torch.from_numpy(x).cuda()).cpu()
                    gpu.append((time.perf_counter() - t0) * 1e3)
                result["bare_torch_cuda_tf32_ms_p50" if tf32 else "bare_torch_cuda_ms_p50"] = pct(gpu, 50)
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
            del gm
    return result


def _through_the_server(torch, models_dir: Path, x: np.ndarray, cpu_calls: int, gpu_calls: int) -> dict:
    """Closed-loop calls through our Scoring server (torchscript backend) on each device, checked
    against the numpy reference."""
    result = {}
    ref = reference_forward("resnet50", model_paths("resnet50", models_dir).weights, x[:1])
    for device, calls, tf32 in (("cpu", cpu_calls, False), ("cuda", gpu_calls, False),
                                ("cuda_tf32", gpu_calls, True)):
        if device != "cpu" and not torch.cuda.is_available():
            continue
        server, core, target = serve("cuda" if tf32 else device, models_dir, allow_tf32=tf32)
        try:
            stats, y = closed_loop(target, calls, x, warmup=2 if device == "cpu" else 20)
            stats["allow_tf32"] = tf32
        finally:
            server.stop(2).wait()
            core.close()
        stats["max_abs_error_vs_numpy_reference_row0"] = float(np.max(np.abs(y[:1] - ref)))
        result[f"scoring_server_{device}"] = stats
        print(json.dumps({device: stats}), flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main())
