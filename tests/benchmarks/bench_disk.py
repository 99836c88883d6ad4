"""Benchmark (not a test): the benchmark's disk, materialized vs on-read train copies, PNG vs WebP.

    python tests/benchmarks/bench_disk.py --work W [--scratch DIR] [--videos 21000] [--frames 32]
                                          [--codec-images 300] [--read-rows 1500] [--json OUT]

W is a work dir after `mesodata build` and `mesodata split` (the sample: `mesodata sample S`,
`mesodata build --data-root S --work W`, `mesodata split --work W --seed 0`). The shards stage runs
here twice on hard-linked copies of W (materialized, on-read; same seed and parameters), then:

1. bytes per crop (image bytes and file bytes per row) per split and mode, and the train split's
   on-read / materialized ratio;
2. the benchmark projected at full counts: videos x frames sampled x the sample's face yield
   (faces report) x dedupe keep rate, split by the split's ratios, train with the preset's copies;
3. lossless WebP (OpenCV and Pillow) against the PNG the artifacts hold, on original crops and
   augmented copies: size, encode and decode time (medians, formats interleaved image by image,
   so a loaded machine slows each alike; read the ratios);
4. the PyTorch reader (`ShardDataset`) over train rows, materialized vs on-read, alternated.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from mesodata.pipeline import augment, cells  # noqa: E402
from mesodata.pipeline.runner import Work  # noqa: E402
from mesodata.pipeline.stages import shards  # noqa: E402

SPLITS = ("train", "val", "test")
MODES = ("materialized", "on-read")


def _table(rows: list[dict], cols: list[str]) -> str:
    w = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    out = ["  ".join(c.ljust(w[c]) for c in cols), "  ".join("-" * w[c] for c in cols)]
    out += ["  ".join(str(r.get(c, "")).ljust(w[c]) for c in cols) for r in rows]
    return "\n".join(out)


# --- 1. the shards, both ways ----------------------------------------------------------------------
def _linked_copy(src: Path, dst: Path) -> Work:
    """W without its shards, files hard-linked (the stage writes new files, never into linked ones)."""
    shutil.copytree(src, dst, copy_function=os.link, ignore=shutil.ignore_patterns("shards", ".parts"))
    return Work(dst)


def build_both(work: Path, scratch: Path, params: dict) -> dict[str, dict]:
    """Both runs of the stage; a scratch dir kept from an earlier run is reused (the stage is then a
    no-op, and its times say so)."""
    out = {}
    for mode in MODES:
        reused = (scratch / mode).exists()
        w = Work(scratch / mode) if reused else _linked_copy(work, scratch / mode)
        t0, c0 = time.perf_counter(), time.process_time()
        shards.run(w, {**params, "augment_storage": mode}, workers=1)
        out[mode] = {"work": w, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                     "reused": reused}
    return out


def split_bytes(w: Work, split: str) -> dict:
    """Rows, originals, copies, image bytes of originals and of copies, file bytes, of one split."""
    r = {"rows": 0, "originals": 0, "copies": 0, "orig_image": 0, "copy_image": 0, "file": 0}
    for f in shards.shard_files(w, split):
        t = pq.read_table(f, columns=["augmentation", "image"])
        lengths = pc.binary_length(t["image"].combine_chunks().field("bytes")).to_numpy(zero_copy_only=False)
        lengths = np.nan_to_num(lengths.astype(float))
        orig = (t["augmentation"].to_numpy(zero_copy_only=False) == "none")
        r["rows"] += t.num_rows
        r["originals"] += int(orig.sum())
        r["copies"] += int((~orig).sum())
        r["orig_image"] += int(lengths[orig].sum())
        r["copy_image"] += int(lengths[~orig].sum())
        r["file"] += f.stat().st_size
    return r


def bytes_table(built: dict) -> tuple[list[dict], dict]:
    rows, raw = [], {}
    for mode in MODES:
        for split in SPLITS:
            b = split_bytes(built[mode]["work"], split)
            raw[(mode, split)] = b
            rows.append({
                "mode": mode, "split": split, "rows": b["rows"], "originals": b["originals"],
                "B/original": round(b["orig_image"] / max(b["originals"], 1)),
                "B/copy image": round(b["copy_image"] / b["copies"]) if b["copies"] else "-",
                "file B/row": round(b["file"] / b["rows"]),
                "file B/original": round(b["file"] / b["originals"]),
                "MB": round(b["file"] / 1e6, 2)})
    return rows, raw


# --- 2. the projection -----------------------------------------------------------------------------
def rates(work: Path) -> dict:
    faces = json.loads((work / "reports" / "faces.json").read_text())["totals"]
    dedupe = json.loads((work / "reports" / "dedupe.json").read_text())
    split = json.loads((work / "reports" / "split.json").read_text())
    ratios = (split.get("params") or {}).get("ratios") or [70, 20, 10]
    return {"sampled_per_video": faces["sampled"] / faces["videos"], "face_yield": faces["face"] / faces["sampled"],
            "dedupe_keep": dedupe["kept"] / dedupe["crops"], "ratios": [r / sum(ratios) for r in ratios]}


def project(raw: dict, rate: dict, videos: int, frames: int, n_train_copies: int) -> tuple[list[dict], dict]:
    """Full-count disk from the sample's per-row figures: each split's bytes per original (and per
    copy row) times the projected originals of that split."""
    crops = videos * frames * rate["face_yield"]
    kept = crops * rate["dedupe_keep"]
    n = dict(zip(SPLITS, (kept * r for r in rate["ratios"])))
    out, totals = [], {}
    for mode in MODES:
        total = 0.0
        for split in SPLITS:
            b = raw[(mode, split)]
            per_orig = b["file"] / b["originals"]  # the file bytes each original brings (its copies too)
            size = n[split] * per_orig
            total += size
            out.append({"mode": mode, "split": split, "originals": round(n[split]),
                        "rows": round(n[split] * (1 + (n_train_copies if split == "train" else 0))),
                        "GB": round(size / 1e9, 1)})
        totals[mode] = total
        out.append({"mode": mode, "split": "all shards", "originals": round(kept), "GB": round(total / 1e9, 1)})
    b = raw[("materialized", "val")]
    totals["faces"] = crops * b["orig_image"] / b["originals"]  # faces/ holds every crop once (before dedupe)
    totals["export"] = kept * b["orig_image"] / b["originals"]  # the exports: the originals, one PNG each
    totals["crops"], totals["kept"] = crops, kept
    return out, totals


# --- 3. PNG vs lossless WebP -----------------------------------------------------------------------
def sample_images(w: Work, n: int) -> dict[str, list[np.ndarray]]:
    """Up to n original crops and n materialized copies (decoded), from the train shards."""
    got = {"original": [], "copy": []}
    for f in shards.shard_files(w, "train"):
        t = pq.read_table(f, columns=["augmentation", "image"])
        for aug, img in zip(t["augmentation"].to_pylist(), t["image"].to_pylist()):
            kind = "original" if aug == "none" else "copy"
            if len(got[kind]) < n:
                got[kind].append(cells.decode(img["bytes"]))
        if all(len(v) >= n for v in got.values()):
            break
    return got


def _pil_webp(rgb: np.ndarray, method: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="WEBP", lossless=True, method=method, quality=100 if method else 0)
    return buf.getvalue()


def _cv_webp(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".webp", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, 101])
    assert ok
    return buf.tobytes()


def _cv_decode(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


ENCODERS = {  # name -> encoder; the PNGs are those the artifacts hold (faces: fast; shards' copies: level 1)
    "PNG fast (faces, OpenCV)": lambda rgb: cells.encode_png(rgb, cells.PNG_FAST),
    "PNG level 1 (copies, OpenCV)": lambda rgb: cells.encode_png(rgb, cells.png_level(1)),
    "PNG level 9 (OpenCV)": lambda rgb: cells.encode_png(rgb, cells.png_level(9)),
    "WebP lossless (OpenCV)": _cv_webp,
    "WebP lossless m0 (Pillow)": lambda rgb: _pil_webp(rgb, 0),
    "WebP lossless m4 (Pillow)": lambda rgb: _pil_webp(rgb, 4),
}


def _timed(fn, arg) -> float:
    t0 = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t0


def codecs(images: dict[str, list[np.ndarray]], rounds: int) -> list[dict]:
    """Per format: median bytes, encode time (once per image) and decode times (Pillow, as every
    mesodata reader and `datasets` decode; OpenCV), each the best of `rounds` per image, formats
    interleaved image by image: the best of several is what the codec costs, not what the load adds."""
    out = []
    for kind, imgs in images.items():
        stats = {name: {"bytes": [], "enc": [], "dec_pil": [], "dec_cv": []} for name in ENCODERS}
        for rgb in imgs:
            encoded = {}
            for name, enc in ENCODERS.items():
                t0 = time.perf_counter()
                encoded[name] = enc(rgb)
                stats[name]["enc"].append(time.perf_counter() - t0)
                stats[name]["bytes"].append(len(encoded[name]))
                assert np.array_equal(cells.decode(encoded[name]), rgb), f"{name} is not lossless"
                assert np.array_equal(_cv_decode(encoded[name]), rgb), f"{name} is not lossless (OpenCV)"
            best = {name: [float("inf"), float("inf")] for name in ENCODERS}
            for _ in range(rounds):
                for name, data in encoded.items():
                    best[name][0] = min(best[name][0], _timed(cells.decode, data))
                    best[name][1] = min(best[name][1], _timed(_cv_decode, data))
            for name, (pil, cv) in best.items():
                stats[name]["dec_pil"].append(pil)
                stats[name]["dec_cv"].append(cv)
        ref = stats["PNG fast (faces, OpenCV)" if kind == "original" else "PNG level 1 (copies, OpenCV)"]
        for name, s in stats.items():
            med = {k: statistics.median(v) for k, v in s.items()}
            rmed = {k: statistics.median(v) for k, v in ref.items()}
            out.append({"crops": f"{kind} ({len(imgs)})", "format": name, "KB": round(med["bytes"] / 1e3, 1),
                        "size vs PNG": f"{med['bytes'] / rmed['bytes']:.2f}",
                        "encode ms": round(med["enc"] * 1e3, 2), "decode ms Pillow": round(med["dec_pil"] * 1e3, 2),
                        "decode vs PNG": f"{med['dec_pil'] / rmed['dec_pil']:.2f}",
                        "decode ms OpenCV": round(med["dec_cv"] * 1e3, 2)})
    return out


# --- 4. the reader ---------------------------------------------------------------------------------
def reader(built: dict, rows: int, reps: int) -> list[dict]:
    from mesodata.detector.data import RowFilter, ShardDataset

    rates_ = {m: [] for m in MODES}
    for _ in range(reps):
        for mode in MODES:  # alternated, so both meet the same load
            ds = ShardDataset(shards.shard_files(built[mode]["work"], "train"), RowFilter(augmentations=None))
            t0, n = time.perf_counter(), 0
            for _row in ds:
                n += 1
                if n >= rows:
                    break
            rates_[mode].append(n / (time.perf_counter() - t0))
    ref = statistics.median(rates_["materialized"])
    return [{"mode": m, "img/s (median)": round(statistics.median(v), 1), "runs": len(v),
             "vs materialized": f"{statistics.median(v) / ref:.2f}"} for m, v in rates_.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="a work dir after mesodata build and split")
    ap.add_argument("--scratch", type=Path, default=None, help="where the two shard runs go (default: a temp dir)")
    ap.add_argument("--videos", type=int, default=21_000)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--augment", default="paper")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--codec-images", type=int, default=150)
    ap.add_argument("--decode-rounds", type=int, default=7)
    ap.add_argument("--read-rows", type=int, default=1500)
    ap.add_argument("--read-reps", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    scratch = a.scratch or Path(tempfile.mkdtemp(prefix="bench_disk_"))
    params = {**shards.DEFAULTS, "augment": a.augment, "seed": a.seed}
    n_copies = len(augment.load_preset(a.augment)["train"])
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (read the ratios)")

    built = build_both(a.work, scratch, params)
    print("\nShards stage, both ways (workers=1):")
    print(_table([{"mode": m, "wall s": round(b["wall_s"], 1), "cpu s": round(b["cpu_s"], 1),
                   "note": "reused (up to date)" if b["reused"] else ""}
                  for m, b in built.items()], ["mode", "wall s", "cpu s", "note"]))

    rows, raw = bytes_table(built)
    print("\n1. Bytes per crop (B = bytes; 'file B/original' counts the copies' rows too):")
    print(_table(rows, ["mode", "split", "rows", "originals", "B/original", "B/copy image", "file B/row",
                        "file B/original", "MB"]))
    tm, to = raw[("materialized", "train")]["file"], raw[("on-read", "train")]["file"]
    print(f"train on disk: on-read {to / 1e6:.2f} MB vs materialized {tm / 1e6:.2f} MB = {to / tm:.3f}x "
          f"({tm / to:.1f}x smaller); materialized train / its originals' image bytes = "
          f"{tm / raw[('materialized', 'train')]['orig_image']:.2f}x")

    rate = rates(a.work)
    proj, totals = project(raw, rate, a.videos, a.frames, n_copies)
    print(f"\n2. Projected at full counts: {a.videos} videos x {a.frames} frames sampled x face yield "
          f"{rate['face_yield']:.3f} = {totals['crops']:,.0f} crops; dedupe keeps {rate['dedupe_keep']:.3f} -> "
          f"{totals['kept']:,.0f} originals; split {'/'.join(f'{r:.0%}' for r in rate['ratios'])}; "
          f"train with {n_copies} copies each (the sample's sampled frames per video: "
          f"{rate['sampled_per_video']:.1f} of {a.frames}; the projection takes all {a.frames})")
    print(_table(proj, ["mode", "split", "originals", "rows", "GB"]))
    print(f"work dir faces/ (every face crop, once): {totals['faces'] / 1e9:.1f} GB; an export "
          f"(originals as PNG files): {totals['export'] / 1e9:.1f} GB before file-system blocks")
    for m in MODES:
        print(f"  {m}: shards {totals[m] / 1e9:.1f} GB + faces/ {totals['faces'] / 1e9:.1f} GB = "
              f"{(totals[m] + totals['faces']) / 1e9:.1f} GB in the work dir")

    images = sample_images(built["materialized"]["work"], a.codec_images)
    codec_rows = codecs(images, a.decode_rounds)
    print(f"\n3. PNG vs lossless WebP (medians per 256x256 crop; decode: best of {a.decode_rounds} per crop; "
          "ratios against the PNG the artifacts hold):")
    print(_table(codec_rows, ["crops", "format", "KB", "size vs PNG", "encode ms", "decode ms Pillow",
                              "decode vs PNG", "decode ms OpenCV"]))

    read_rows = reader(built, a.read_rows, a.read_reps)
    print(f"\n4. PyTorch reader over train rows (ShardDataset, one process, {a.read_rows} rows a run):")
    print(_table(read_rows, ["mode", "img/s (median)", "runs", "vs materialized"]))

    if a.json:
        a.json.write_text(json.dumps({
            "stage": {m: {k: v for k, v in b.items() if k != "work"} for m, b in built.items()},
            "bytes": rows, "rates": rate, "projection": proj,
            "totals": {k: v for k, v in totals.items()}, "codecs": codec_rows, "reader": read_rows,
            "load": os.getloadavg()[0]}, indent=1))
    if a.scratch is None:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
