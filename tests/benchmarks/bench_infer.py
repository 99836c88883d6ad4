"""Single-image (batch 1) CPU latency of Meso-4 and MesoInception-4: PyTorch eager (contiguous and
channels_last) and onnxruntime, on a real 256x256 face crop. Not run by CI.

    python tests/benchmarks/bench_infer.py [--repeats 200] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from mesodata.detector.data import to_tensor
from mesodata.detector.export import export_onnx
from mesodata.detector.models import MODEL_NAMES, create_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: tests.fixtures
from tests.fixtures.samples import astronaut_face_crop  # noqa: E402


def _latency_ms(fn, repeats: int, warmup: int = 10) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads for both runtimes")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    crop = np.ascontiguousarray(astronaut_face_crop(np.random.default_rng(0))[:, :, ::-1])
    x = to_tensor(crop)[None]
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__}")
    print("\n| model | runtime | median ms | p95 ms | images/s |\n|---|---|---|---|---|")
    for name in MODEL_NAMES:
        model = create_model(name).eval()
        with torch.inference_mode():
            for label, net, inp in (("pytorch", model, x),
                                    ("pytorch channels_last",
                                     create_model(name).eval().to(memory_format=torch.channels_last),
                                     x.contiguous(memory_format=torch.channels_last))):
                if net is not model:
                    net.load_state_dict(model.state_dict())
                med, p95 = _latency_ms(lambda: net(inp), args.repeats)
                print(f"| {name} | {label} | {med:.2f} | {p95:.2f} | {1e3 / med:.0f} |", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(model, Path(tmp) / f"{name}.onnx")
            so = ort.SessionOptions()
            if args.threads:
                so.intra_op_num_threads = args.threads
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            feed = {"image": x.numpy()}
            med, p95 = _latency_ms(lambda: sess.run(["logit"], feed), args.repeats)
            print(f"| {name} | onnxruntime | {med:.2f} | {p95:.2f} | {1e3 / med:.0f} |", flush=True)


if __name__ == "__main__":
    main()
