"""Run a network over a loader: logits, P(fake) and (optionally) SVM features, one row per image.

Also the device choice and the safe weights file format shared by training, evaluation and export.
"""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn

from mesodata.pipeline.errors import UserError

from .models import MODEL_NAMES, MesoNet, create_model

__all__ = ["resolve_device", "autocast_for", "score_loader", "save_weights", "load_weights", "load_model",
           "FEATURE_KINDS", "WEIGHTS_FORMAT", "run_models"]

FEATURE_KINDS = ("hidden16", "flat1024")
WEIGHTS_FORMAT = 1


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but PyTorch sees no CUDA GPU (use --device cpu or auto)")
    if device not in ("cpu", "cuda"):
        raise UserError(f"unknown device {device!r}: use auto, cpu or cuda")
    return torch.device(device)


def autocast_for(device: torch.device, cpu_bf16: bool) -> contextlib.AbstractContextManager:
    """Mixed precision: bf16 (else fp16) autocast on CUDA; bf16 on CPU only when asked."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16)


_META = ("label", "source", "method", "video_id", "frame_index", "augmentation")


@torch.no_grad()
def score_loader(model: MesoNet, batches: Iterable[dict], device: torch.device,
                 features: str | None = None, channels_last: bool = True,
                 cpu_bf16: bool = False) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Eval-mode pass: a frame table (meta columns + logit + prob) and, if `features` is
    'hidden16' or 'flat1024', the float32 feature matrix in the same row order."""
    if features is not None and features not in FEATURE_KINDS:
        raise UserError(f"unknown SVM features {features!r}: use {' or '.join(FEATURE_KINDS)}")
    model.eval()
    cols: dict[str, list] = {k: [] for k in _META}
    logits, feats = [], []
    for batch in batches:
        x = batch["image"].to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_for(device, cpu_bf16):
            fmap = model.forward_features(x)
            hidden = model.forward_head(fmap, pre_logits=True)
            logit = model.fc2(hidden).squeeze(1)  # dropout is identity in eval mode
        logits.append(logit.float().cpu())
        if features == "hidden16":
            feats.append(hidden.float().cpu())
        elif features == "flat1024":
            feats.append(torch.flatten(fmap, 1).float().cpu())
        for k in _META:
            v = batch.get(k)
            if v is not None:
                cols[k].extend(v.tolist() if torch.is_tensor(v) else list(v))
    logit_np = torch.cat(logits).numpy() if logits else np.zeros(0, np.float32)
    frame = pd.DataFrame({k: v for k, v in cols.items() if len(v) == len(logit_np)})
    frame["logit"] = logit_np
    frame["prob"] = 1.0 / (1.0 + np.exp(-logit_np.astype(np.float64)))
    X = torch.cat(feats).numpy() if feats else None
    return frame, X


def save_weights(model: MesoNet, arch: str, path: str | Path) -> None:
    """A plain dict of tensors and strings (no pickled objects), written atomically."""
    from mesodata.pipeline.atomic import atomic_path

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": WEIGHTS_FORMAT, "arch": arch, "state_dict": state}, tmp)


def load_weights(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[MesoNet, str]:
    """Load a weights file with `weights_only=True`: a file holding any pickled object other than
    tensors and plain containers is refused. Returns (model in eval mode, arch name)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no weights file at {path}")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise UserError(f"{path} is not a plain weights file; refusing to unpickle it "
                        f"({str(exc).splitlines()[0][:120]})") from exc
    if not isinstance(blob, dict) or blob.get("arch") not in MODEL_NAMES or "state_dict" not in blob:
        raise UserError(f"{path} is not a mesodata weights file (expected keys arch, state_dict)")
    model = create_model(blob["arch"])
    model.load_state_dict(blob["state_dict"])
    return model.eval(), blob["arch"]


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> MesoNet:
    """The network of a run's weights file (WORK/detector/<run>/meso4.pt or mesoinception4.pt), in
    eval mode: `from mesodata.detector import load_model`. Loaded with `weights_only=True`."""
    return load_weights(path, map_location)[0]


_PREFERENCE = ("mesoinception4+svm", "mesoinception4", "meso4")


def run_models(run_dir: str | Path) -> tuple[dict, dict[str, dict]]:
    """(metrics.json, {model: {"weights": Path, "head": Path | None}}) of a finished run: only the
    models its metrics.json records, with the files it names, best first (SVM, MesoInception-4,
    Meso-4). Whatever else lies in the folder is not used."""
    import json

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"no run folder at {run_dir}")
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except FileNotFoundError:
        raise UserError(f"no trained weights in {run_dir}: it has no metrics.json (not a finished run); "
                        "run `mesodata train-detector` first") from None
    except ValueError as exc:
        raise UserError(f"{run_dir / 'metrics.json'} is not valid JSON ({exc})") from None
    if "seeds" in metrics and not metrics.get("models"):
        first = next(iter(metrics["seeds"]), "0")
        raise UserError(f"{run_dir} holds a several-seed run: pass one seed's folder, e.g. "
                        f"--run-dir {run_dir / f'seed-{first}'}")
    recorded = metrics.get("models", {})
    listed = metrics.get("config", {}).get("models") or list(recorded)
    out: dict[str, dict] = {}
    for name in sorted((m for m in listed if m in recorded), key=lambda m: (_PREFERENCE + (m,)).index(m)):
        entry = recorded[name]
        if not entry.get("weights"):
            continue
        files = {"weights": run_dir / entry["weights"],
                 "head": run_dir / entry["head"] if entry.get("head") else None}
        missing = [str(p) for p in files.values() if p is not None and not p.is_file()]
        if missing:
            raise UserError(f"run {run_dir} is incomplete: metrics.json names {', '.join(missing)}, which is missing")
        out[name] = files
    if not out:
        raise UserError(f"no trained model recorded in {run_dir / 'metrics.json'}: run `mesodata train-detector` first")
    return metrics, out


def num_correct(logits: torch.Tensor, labels: torch.Tensor) -> int:
    return int(((logits > 0).long() == labels.long()).sum())


def module_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
