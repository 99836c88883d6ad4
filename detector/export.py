"""Export a run's networks to ONNX.

Each `<arch>.pt` becomes `<arch>.onnx` with input `image` (N, 3, 256, 256) float32 RGB in [0, 1]
and three outputs: `logit` (N,) — sigmoid(logit) = P(fake) —, `hidden16` (N, 16) and
`flat1024` (N, 1024). The SVM head stays a scikit-learn pipeline (skl2onnx is not a dependency);
it is a two-step use, written to ONNX.md next to the models:
features = session.run(["hidden16"], ...) then `load_svm("svm.skops").decision_function(features)`.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from mesodata.pipeline.atomic import write_bytes
from mesodata.pipeline.errors import UserError

from .infer import load_weights, run_models
from .models import INPUT_SIZE, MesoNet

__all__ = ["export_onnx", "export_run", "OUTPUT_NAMES"]

OUTPUT_NAMES = ("logit", "hidden16", "flat1024")


class _AllOutputs(nn.Module):
    """Wrap a MesoNet so the exported graph exposes the logit and both SVM feature kinds."""

    def __init__(self, net: MesoNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fmap = self.net.forward_features(x)
        hidden = self.net.forward_head(fmap, pre_logits=True)
        return self.net.fc2(hidden).squeeze(1), hidden, torch.flatten(fmap, 1)


def export_onnx(model: MesoNet, path: str | Path, opset: int = 17) -> Path:
    """Write `model` (eval mode, fp32) as ONNX with a dynamic batch axis."""
    model = model.eval().float().to(memory_format=torch.contiguous_format)
    dummy = torch.rand(1, 3, INPUT_SIZE, INPUT_SIZE)
    buf = io.BytesIO()
    # The TorchScript-based exporter: the dynamo one needs onnxscript, a dependency we avoid.
    torch.onnx.export(_AllOutputs(model).eval(), (dummy,), buf, input_names=["image"],
                      output_names=list(OUTPUT_NAMES), opset_version=opset, dynamo=False,
                      dynamic_axes={"image": {0: "batch"}, **{o: {0: "batch"} for o in OUTPUT_NAMES}})
    write_bytes(path, buf.getvalue())
    return Path(path)


_SVM_DOC = """# Using the exported models

`<arch>.onnx`: input `image`, float32 (N, 3, 256, 256), RGB in [0, 1] (a 256x256 face crop / 255).
Outputs: `logit` (N,) with sigmoid(logit) = P(fake) (label 1 = fake); `hidden16` (N, 16), the
hidden layer after LeakyReLU; `flat1024` (N, 1024), the flattened trunk.

MesoInception-4 + SVM is two steps (the SVM is a scikit-learn pipeline saved with skops):

```python
import onnxruntime as ort
from mesodata.detector.svm import load_svm
sess = ort.InferenceSession("mesoinception4.onnx")
feats = sess.run(["{features}"], {{"image": batch}})[0]
decision = load_svm("svm.skops").decision_function(feats)   # > 0 means fake
```
"""


def export_run(run_dir: str | Path, fmt: str = "onnx") -> list[Path]:
    """Export every network the run's metrics.json records; returns the written files."""
    run_dir = Path(run_dir)
    if fmt != "onnx":
        raise UserError(f"unknown export format {fmt!r}: only onnx is supported")
    metrics, models = run_models(run_dir)
    weights = list(dict.fromkeys(files["weights"] for files in models.values()))
    written = []
    for w in weights:
        model, arch = load_weights(w)
        written.append(export_onnx(model, run_dir / f"{arch}.onnx"))
    features = metrics.get("config", {}).get("svm_features", "hidden16")
    write_bytes(run_dir / "ONNX.md", _SVM_DOC.format(features=features).encode())
    written.append(run_dir / "ONNX.md")
    return written
