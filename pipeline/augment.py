"""The benchmark's augmentations: named transforms with exact, recorded parameters.

A *preset* lists the copies written next to each original: `train` (augmented copies of every
train crop) and `perturb` (copies of every test crop written to `test-perturbed/` when asked).
Presets are `"paper"`, `"none"` or a YAML/JSON file of the same shape, e.g.::

    train:
      - {transform: gaussian_blur, kernel: 9}
      - {transform: rotate, angle: 45, direction: random}
      - {name: shrink, transform: scale, factor: 0.5}
    perturb:                       # optional; default: the paper's eight transforms
      - {transform: jpeg, quality: 50}

Transforms (parameters, defaults):

- `gaussian_blur`: `kernel` (odd int >= 3), `sigma` ("auto" = OpenCV's rule for the kernel,
  `0.3 * ((kernel - 1) / 2 - 1) + 0.8`; a number; or `[lo, hi]` drawn per sample).
- `rotate`: `angle` (degrees, positive = counter-clockwise), `direction` ("ccw", "cw" or "random",
  drawn per sample), `border` (for angles that are not multiples of 90°: "reflect_101",
  "reflect", "replicate" or "constant"). Multiples of 90° are exact (`np.rot90`, no interpolation).
- `scale`: `factor` (0.34..4, not 1) then back to the input size: up = resize then crop (`position`
  "center" or "random"), down = resize (area) then pad with `border` ("reflect_101", ...).
- `jpeg`: `quality` (1..100, or `[lo, hi]`).
- `gaussian_noise`: `sigma` (pixel units of 0..255, or `[lo, hi]`).

Every random choice is drawn from a generator seeded by `sample_seed(seed, video_id, frame_index,
name)`, so a copy depends only on its inputs, never on which worker made it or in which order.
`apply` returns the image and the exact parameters it used (what the `aug_params` column holds);
`params_for` gives those parameters from the image's size alone, and `replay` makes a copy again
from its original and its recorded parameters (the shards' on-read storage). albumentations draws
nothing: every value is fixed in the Compose, and each call seeds it explicitly (an unpickled
Compose forgets its seed).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import UserError

# albumentations asks PyPI for a newer version on import (2 s timeout): not from build workers.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__all__ = ["PRESETS", "TRANSFORMS", "load_preset", "normalize", "sample_seed", "apply", "params_for",
           "replay", "opencv_sigma"]

_BORDERS = {"reflect_101": cv2.BORDER_REFLECT_101, "reflect": cv2.BORDER_REFLECT,
            "replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}

# The paper's augmentations: Gaussian blur 3x3, 9x9, 15x15; rotation by 45, 90, 180 degrees;
# scaling by +50% and -50%, each back to the crop size.
PAPER = [
    {"transform": "gaussian_blur", "kernel": 3},
    {"transform": "gaussian_blur", "kernel": 9},
    {"transform": "gaussian_blur", "kernel": 15},
    {"transform": "rotate", "angle": 45},
    {"transform": "rotate", "angle": 90},
    {"transform": "rotate", "angle": 180},
    {"transform": "scale", "factor": 1.5},
    {"transform": "scale", "factor": 0.5},
]
PRESETS: dict[str, dict] = {
    "paper": {"train": PAPER, "perturb": PAPER},
    "none": {"train": [], "perturb": PAPER},
}

_DEFAULTS: dict[str, dict[str, Any]] = {
    "gaussian_blur": {"kernel": 3, "sigma": "auto"},
    "rotate": {"angle": 45, "direction": "random", "border": "reflect_101"},
    "scale": {"factor": 1.5, "position": "center", "border": "reflect_101"},
    "jpeg": {"quality": 50},
    "gaussian_noise": {"sigma": 8.0},
}
TRANSFORMS = tuple(_DEFAULTS)


def opencv_sigma(kernel: int) -> float:
    """OpenCV's sigma for a Gaussian kernel of size `kernel` (what `cv2.GaussianBlur(sigma=0)` uses)."""
    return round(0.3 * ((kernel - 1) * 0.5 - 1) + 0.8, 6)


def _bad(where: str, key: str, rule: str, value) -> UserError:
    return UserError(f"augmentation {where}: the {key!r} parameter must be {rule}. Got {value!r} instead.")


def _number_or_range(where: str, key: str, v, lo: float, hi: float, integer: bool = False):
    ok = (lambda x: isinstance(x, int) and not isinstance(x, bool)) if integer else \
        (lambda x: isinstance(x, (int, float)) and not isinstance(x, bool))
    rule = f"{'an integer' if integer else 'a number'} in [{lo}, {hi}] or a [lo, hi] pair of them"
    if isinstance(v, (list, tuple)):
        if len(v) != 2 or not all(ok(x) and lo <= x <= hi for x in v) or v[0] > v[1]:
            raise _bad(where, key, rule, v)
        return [v[0], v[1]] if integer else [float(v[0]), float(v[1])]
    if not ok(v) or not lo <= v <= hi:
        raise _bad(where, key, rule, v)
    return v if integer else float(v)


def _default_name(t: str, p: dict) -> str:
    if t == "gaussian_blur":
        return f"blur{p['kernel']}"
    if t == "rotate":
        a = p["angle"]
        return f"rotate{int(a) if float(a).is_integer() else a}"
    if t == "scale":
        pct = round(abs(p["factor"] - 1) * 100)
        return f"scale_{'up' if p['factor'] > 1 else 'down'}{pct}"
    if t == "jpeg":
        q = p["quality"]
        return f"jpeg{q if isinstance(q, int) else f'{q[0]}-{q[1]}'}"
    s = p["sigma"]
    return f"noise{s if not isinstance(s, list) else f'{s[0]}-{s[1]}'}"


def normalize(entry: dict, where: str = "entry") -> dict:
    """One preset entry with every default filled in and checked: {"name", "transform", ...params}."""
    if not isinstance(entry, dict) or "transform" not in entry:
        raise UserError(f"augmentation {where}: each entry must be a mapping with a 'transform' key. "
                        f"Got {entry!r} instead.")
    t = entry["transform"]
    if t not in _DEFAULTS:
        raise UserError(f"augmentation {where}: unknown transform {t!r}; choose from {', '.join(TRANSFORMS)}")
    unknown = set(entry) - {"name", "transform", *_DEFAULTS[t]}
    if unknown:
        raise UserError(f"augmentation {where}: {t} takes no parameter {sorted(unknown)[0]!r}; "
                        f"it takes {', '.join(_DEFAULTS[t])}")
    p = {**_DEFAULTS[t], **{k: v for k, v in entry.items() if k not in ("name", "transform")}}
    w = f"{where} ({t})"
    if t == "gaussian_blur":
        k = p["kernel"]
        if not isinstance(k, int) or isinstance(k, bool) or k < 3 or k % 2 == 0 or k > 255:
            raise _bad(w, "kernel", "an odd integer in [3, 255]", k)
        if p["sigma"] != "auto":
            p["sigma"] = _number_or_range(w, "sigma", p["sigma"], 0.05, 100.0)
    elif t == "rotate":
        a = p["angle"]
        if not isinstance(a, (int, float)) or isinstance(a, bool) or not 0 < abs(a) < 360:
            raise _bad(w, "angle", "a number of degrees with 0 < |angle| < 360", a)
        if p["direction"] not in ("ccw", "cw", "random"):
            raise _bad(w, "direction", "one of 'ccw', 'cw', 'random'", p["direction"])
        if p["border"] not in _BORDERS:
            raise _bad(w, "border", f"one of {', '.join(map(repr, _BORDERS))}", p["border"])
    elif t == "scale":
        f = p["factor"]
        if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0.34 <= f <= 4 or f == 1:
            raise _bad(w, "factor", "a number in [0.34, 4] other than 1", f)
        p["factor"] = float(f)
        if p["position"] not in ("center", "random"):
            raise _bad(w, "position", "'center' or 'random'", p["position"])
        if p["border"] not in _BORDERS:
            raise _bad(w, "border", f"one of {', '.join(map(repr, _BORDERS))}", p["border"])
    elif t == "jpeg":
        p["quality"] = _number_or_range(w, "quality", p["quality"], 1, 100, integer=True)
    elif t == "gaussian_noise":
        p["sigma"] = _number_or_range(w, "sigma", p["sigma"], 0.0, 255.0)
    name = entry.get("name") or _default_name(t, p)
    if not isinstance(name, str) or name == "none" or not name.strip():
        raise _bad(w, "name", "a non-empty string other than 'none'", name)
    return {"name": name, "transform": t, **p}


def load_preset(augment: str | os.PathLike) -> dict:
    """Resolve `augment` ("paper", "none" or a YAML/JSON file) to {"preset", "train", "perturb"}.

    The result is plain JSON data with every default filled in, so it can be hashed into a stage
    fingerprint: a changed preset file changes the fingerprint, a moved one does not.
    """
    if str(augment) in PRESETS:
        name, spec = str(augment), PRESETS[str(augment)]
    else:
        path = Path(augment)
        if not path.is_file():
            raise UserError(f"augmentation preset {str(augment)!r} is neither "
                            f"{' nor '.join(map(repr, PRESETS))} nor a file")
        text = path.read_text()
        try:
            if path.suffix.lower() == ".json":
                spec = json.loads(text)
            else:
                import yaml
                spec = yaml.safe_load(text)
        except Exception as exc:  # yaml and json raise different types
            raise UserError(f"augmentation preset {path}: cannot parse it ({exc})") from exc
        name = path.stem
        if not isinstance(spec, dict) or not set(spec) <= {"train", "perturb", "name"}:
            raise UserError(f"augmentation preset {path}: expected a mapping with keys 'train' and "
                            f"optionally 'perturb'. Got {spec!r:.120} instead.")
        name = spec.get("name", name)
    out = {"preset": name}
    for key in ("train", "perturb"):
        entries = spec.get(key, [] if key == "train" else PAPER) or []
        if not isinstance(entries, list):
            raise UserError(f"augmentation preset {name}: {key!r} must be a list. Got {entries!r:.120} instead.")
        norm = [normalize(e, f"{name}.{key}[{i}]") for i, e in enumerate(entries)]
        names = [e["name"] for e in norm]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise UserError(f"augmentation preset {name}: {key!r} names {sorted(dup)[0]!r} twice; "
                            f"give the entries distinct 'name's")
        out[key] = norm
    return out


def sample_seed(seed: int, video_id: str, frame_index: int, name: str) -> int:
    """The seed of one copy: a hash of the run's seed, the sample's id and the transform's name."""
    digest = hashlib.sha256(f"{seed}\x00{video_id}\x00{frame_index}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _draw(rng: np.random.Generator, v, integer: bool = False):
    if isinstance(v, list):
        return int(rng.integers(v[0], v[1] + 1)) if integer else round(float(rng.uniform(v[0], v[1])), 6)
    return v


@functools.lru_cache(maxsize=256)
def _compose(kind: str, *args):
    """A cached albumentations pipeline whose parameters are all fixed (so its own RNG picks nothing)."""
    import albumentations as A

    if kind == "blur":
        k, sigma = args
        ts = [A.GaussianBlur(blur_limit=(k, k), sigma_limit=(sigma, sigma), p=1.0)]
    elif kind == "rotate":
        angle, border = args
        ts = [A.Rotate(limit=(angle, angle), interpolation=cv2.INTER_LINEAR, border_mode=_BORDERS[border],
                       crop_border=False, p=1.0)]
    elif kind == "upscale":
        size, h, w, y, x = args
        ts = [A.Resize(size, size, interpolation=cv2.INTER_LINEAR, p=1.0),
              A.Crop(x_min=x, y_min=y, x_max=x + w, y_max=y + h, p=1.0)]
    elif kind == "downscale":
        size, h, w, border = args
        ts = [A.Resize(size, size, interpolation=cv2.INTER_AREA, p=1.0),
              A.PadIfNeeded(min_height=h, min_width=w, position="center", border_mode=_BORDERS[border], p=1.0)]
    elif kind == "jpeg":
        (q,) = args
        ts = [A.ImageCompression(compression_type="jpeg", quality_range=(q, q), p=1.0)]
    else:
        raise ValueError(kind)
    return A.Compose(ts, p=1.0, strict=True)


def _run(compose, image: np.ndarray, seed: int) -> np.ndarray:
    compose.set_random_seed(seed % (2 ** 32))  # explicit per sample: an unpickled Compose forgets its seed
    return compose(image=image)["image"]


def _choose(spec: dict, seed: int, h: int, w: int) -> tuple[dict, np.random.Generator]:
    """Every random choice of one copy, in a fixed order: (exact parameters, the generator after
    them). The pixels are not needed, so a writer can record the parameters without the image."""
    rng = np.random.default_rng(seed)
    t = spec["transform"]
    params: dict[str, Any] = {"transform": t}
    if t == "gaussian_blur":
        k = spec["kernel"]
        sigma = opencv_sigma(k) if spec["sigma"] == "auto" else _draw(rng, spec["sigma"])
        params.update(kernel=k, sigma=sigma)
    elif t == "rotate":
        sign = {"ccw": 1, "cw": -1}.get(spec["direction"]) or (1 if rng.integers(0, 2) else -1)
        angle = sign * spec["angle"]
        if abs(angle) == 180:
            angle = 180  # both directions give the same image
        if float(angle) % 90 == 0:
            params.update(angle=angle, exact=True, rot90_k=int(angle // 90) % 4)
        else:
            params.update(angle=angle, exact=False, interpolation="linear", border=spec["border"])
    elif t == "scale":
        f = spec["factor"]
        if h != w:
            raise ValueError(f"scale expects a square crop. Got {h}x{w} instead.")
        size = max(1, round(h * f))
        if f > 1:
            if spec["position"] == "center":
                y, x = (size - h) // 2, (size - w) // 2
            else:
                y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
            params.update(factor=f, resized=size, crop_yx=[y, x], interpolation="linear")
        else:
            params.update(factor=f, resized=size, pad=spec["border"], interpolation="area")
    elif t == "jpeg":
        params.update(quality=_draw(rng, spec["quality"], integer=True))
    elif t == "gaussian_noise":
        params.update(sigma=_draw(rng, spec["sigma"]))
    else:
        raise ValueError(f"unknown transform {t!r}")
    params["seed"] = seed
    return params, rng


def _render(image: np.ndarray, spec: dict, p: dict, rng: np.random.Generator) -> np.ndarray:
    """The copy's pixels from its chosen parameters (and, for noise, the generator after the choices)."""
    t, seed = p["transform"], p["seed"]
    h, w = image.shape[:2]
    if t == "gaussian_blur":
        return _run(_compose("blur", p["kernel"], float(p["sigma"])), image, seed)
    if t == "rotate":
        if p["exact"]:
            return np.ascontiguousarray(np.rot90(image, p["rot90_k"]))  # exact: a permutation of the pixels
        return _run(_compose("rotate", float(p["angle"]), p["border"]), image, seed)
    if t == "scale":
        if p["factor"] > 1:
            y, x = p["crop_yx"]
            return _run(_compose("upscale", p["resized"], h, w, y, x), image, seed)
        return _run(_compose("downscale", p["resized"], h, w, spec["border"]), image, seed)
    if t == "jpeg":
        return _run(_compose("jpeg", int(p["quality"])), image, seed)
    noise = rng.normal(0.0, p["sigma"], image.shape)
    return np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)


def params_for(spec: dict, seed: int, shape: tuple[int, ...]) -> dict:
    """The exact parameters `apply` records for an image of `shape`, without the image: what the
    shards write for a copy they store as parameters only (augment_storage "on-read")."""
    return _choose(spec, seed, int(shape[0]), int(shape[1]))[0]


def apply(image: np.ndarray, spec: dict, seed: int) -> tuple[np.ndarray, dict]:
    """Apply one normalized preset entry to an RGB uint8 image; return (image, exact parameters).

    `seed` is the copy's own seed (see `sample_seed`); the parameters returned name the transform
    and every value it used, and are what `aug_params` records.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"apply expects an RGB uint8 image (H, W, 3). Got {image.dtype} {image.shape} instead.")
    params, rng = _choose(spec, seed, *image.shape[:2])
    out = _render(image, spec, params, rng)
    if out.shape != image.shape:
        raise AssertionError(f"{spec['name']} changed the crop's shape {image.shape} -> {out.shape}")
    return np.ascontiguousarray(out), params


def replay(original: np.ndarray, spec: dict, aug_params: str) -> np.ndarray:
    """A copy recorded as parameters only: `original` under `spec` with the seed `aug_params` (the
    row's JSON) holds. The result is the pixels the materialized copy holds; ValueError when the
    parameters drawn again differ from the recorded ones (another preset or augmentation code)."""
    recorded = json.loads(aug_params)
    out, used = apply(original, spec, int(recorded["seed"]))
    if json.dumps(used, sort_keys=True) != json.dumps(recorded, sort_keys=True):
        raise ValueError(f"augmentation {spec['name']!r} draws {json.dumps(used, sort_keys=True)} "
                         f"where the shard records {aug_params}: the shards were written by another "
                         "preset or another version of mesodata's augmentations")
    return out
