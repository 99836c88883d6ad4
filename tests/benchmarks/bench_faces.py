"""Benchmark: the faces stage's per-video work against DeepfakeBench's way and the decode floor.

    python tests/benchmarks/bench_faces.py [--repeats 5] [--baseline-repeats 2] [--dir DIR] [--steps]
                                           [--against REPO_COPY]

Videos (real footage, H.264 with B-frames, 25 fps, 10 s = 250 frames), written once to DIR:
  360p-carphone   the carphone talking head (frames 0-59 back and forth), pillarboxed to 640x360
  360p-astronaut  the astronaut portrait under a slow camera move, 640x360
  1080p-carphone  the same talking head upscaled to 1920x1080
  1080p-astronaut the same camera move rendered at 1920x1080

Per video, 32 frames evenly spaced over the whole video (the stage's default), three ways:
  ours      pipeline.stages.faces.extract_rows, a unit's work (plan, PyAV decode, Viola-Jones on a small
            grayscale copy + face track, 256x256 crop, dlib check of the crop, PNG encode)
  baseline  DeepfakeBench's preprocessing: decode every frame of the video (cv2.VideoCapture),
            and on each sampled frame run dlib's HOG detector at full resolution with one
            upsampling (`face_detector(rgb, 1)`), take the largest face, crop 1.3x, 256x256, PNG
  floor     decoding alone, every frame up to the last sampled one, nothing converted or detected
  skip      decoding alone as the stage decodes: the sampled frames and the frames they refer to,
            skipping the unsampled frames nothing refers to (pipeline.frames.FrameSampler)
Prints median wall and CPU seconds per video and the ratios ours/floor, ours/skip and baseline/ours.
`--against` also times `before`: the same unit work by another copy of the repository (e.g.
`git worktree add /tmp/old <commit>`), imported beside this one and run in turn with ours and the
floor, so a change is measured side by side under the same load.
`--steps` instead prints the CPU per sampled frame of each step of ours (detect, RGB, crop, dlib, PNG)
beside the decode floor's, and how many frames needed the whole-frame search: the profile to start from.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mesodata.pipeline import footage  # noqa: E402
from mesodata.pipeline.frames import plan_indices  # noqa: E402
from mesodata.pipeline.stages.faces import extract_rows, normalize_params  # noqa: E402

N, FPS, SAMPLES = 250, 25, 32


def _carphone(size: tuple[int, int]) -> list[np.ndarray]:
    src = footage.carphone_frames()[:60]
    seq = list(src) + list(src[::-1])
    w, h = size
    out = []
    for i in range(N):
        f = seq[i % len(seq)]
        f = cv2.resize(f, (round(f.shape[1] * h / f.shape[0]), h), interpolation=cv2.INTER_CUBIC)
        left = (w - f.shape[1]) // 2
        out.append(cv2.copyMakeBorder(f, 0, 0, left, w - f.shape[1] - left, cv2.BORDER_REPLICATE))
    return out


def _astronaut(size: tuple[int, int]) -> list[np.ndarray]:
    a = cv2.copyMakeBorder(footage.astronaut(), 0, 0, 200, 200, cv2.BORDER_REPLICATE)  # 16:9
    return footage.pan(a, N, size, seed=1)


VIDEOS = {
    "360p-carphone": (_carphone, (640, 360)),
    "360p-astronaut": (_astronaut, (640, 360)),
    "1080p-carphone": (_carphone, (1920, 1080)),
    "1080p-astronaut": (_astronaut, (1920, 1080)),
}


def make_videos(folder: Path) -> dict[str, str]:
    out = {}
    for name, (make, size) in VIDEOS.items():
        path = folder / f"{name}.mp4"
        if not path.exists():
            footage.write_video(path, make(size), fps=FPS, crf=20, bframes=2)
        out[name] = str(path)
    return out


PARAMS = normalize_params({"frames": SAMPLES})


def ours(path: str) -> int:
    """The stage's unit work for one video (frame count and rate come from the manifest)."""
    rows = extract_rows(path, N, FPS, PARAMS)
    return sum(r["status"] == "face" for r in rows)


def against(repo: Path):
    """`ours` for the copy of the repository at `repo`, imported as package `mesodata_against`."""
    import importlib

    pkg = Path(tempfile.mkdtemp(prefix="bench-against-")) / "mesodata_against"
    pkg.mkdir()
    for d in ("pipeline", "detector", "manifests", "schemas"):
        (pkg / d).symlink_to(repo.resolve() / d)
    sys.path.insert(0, str(pkg.parent))
    faces = importlib.import_module("mesodata_against.pipeline.stages.faces")
    params = faces.normalize_params({"frames": SAMPLES})

    def before(path: str) -> int:
        return sum(r["status"] == "face" for r in faces.extract_rows(path, N, FPS, params))
    return before


def floor(path: str) -> int:
    last = plan_indices(N, FPS, frames=SAMPLES)[-1]
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for i, _ in enumerate(c.decode(s)):
            if i >= last:
                break
    return 0


def skip_floor(path: str) -> int:
    from mesodata.pipeline.frames import FrameSampler

    for _ in FrameSampler(path, plan_indices(N, FPS, frames=SAMPLES)):
        pass
    return 0


_DLIB = None


def baseline(path: str) -> int:
    """DeepfakeBench-style: every frame decoded, dlib HOG (1 upsample) on each sampled frame."""
    global _DLIB
    import dlib

    _DLIB = _DLIB or dlib.get_frontal_face_detector()
    wanted = set(plan_indices(N, FPS, frames=SAMPLES))
    cap = cv2.VideoCapture(path)
    found, i = 0, 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if i in wanted:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            faces = _DLIB(rgb, 1)
            if len(faces):
                f = max(faces, key=lambda r: r.width() * r.height())
                side = int(1.3 * max(f.width(), f.height()))
                cx, cy = (f.left() + f.right()) // 2, (f.top() + f.bottom()) // 2
                x0, y0 = max(0, cx - side // 2), max(0, cy - side // 2)
                crop = cv2.resize(bgr[y0:y0 + side, x0:x0 + side], (256, 256))
                cv2.imencode(".png", crop)
                found += 1
        i += 1
    cap.release()
    return found


def steps(path: str) -> dict[str, float]:
    """CPU ms per sampled frame of each step of the face work, run one after another in this thread
    (OpenCV on one thread), beside the decode floor's CPU per sampled frame: where the time goes."""
    from mesodata.pipeline import cells
    from mesodata.pipeline import detect as D
    from mesodata.pipeline.frames import FrameSampler
    from mesodata.pipeline.stages.faces import _cropper

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        idx = plan_indices(N, FPS, frames=SAMPLES)
        frames = [sf.frame for sf in FrameSampler(path, idx)]
        c = _cropper(PARAMS)
        tracks, whole = [], 0
        for f in frames:  # the track each frame is searched with, as the stage does it
            tracks.append(c.track)
            g = D.luma(f)
            whole += c.track is None or not c.detector.detect_near(g, c.track, 1.0 + 0.5 * c.misses)
            c.process(f)
        grays = [D.luma(f) for f in frames]

        def cpu(fn):
            best = math.inf
            for _ in range(3):
                t = time.process_time()
                out = fn()
                best = min(best, time.process_time() - t)
            return best * 1e3 / len(frames), out

        out = {"decode floor": cpu(lambda: floor(path))[0]}
        out["whole-frame detect"] = cpu(lambda: [c.detector.detect(g) for g in grays])[0]
        out["track window detect"], near = cpu(lambda: [c.detector.detect_near(g, t) if t else [] for g, t in
                                                         zip(grays, tracks)])
        boxes = [b[0] if b else (c.track or D.Box(0, 0, 64, 64)) for b in near]
        # the face's square alone is converted to RGB (detect.rgb_cutter), then padded and resized
        out["RGB + crop + resize"], crops = cpu(lambda: [
            D._crop(D.rgb_cutter(f), f.width, f.height, b, PARAMS["margin"], 256)[0] for f, b in zip(frames, boxes)])
        out["dlib check"] = cpu(lambda: [c.verifier(x) for x in crops])[0]
        out["PNG"] = cpu(lambda: [cells.encode(x) for x in crops])[0]
        out["whole-frame searches"] = whole
        c.close()
        return out
    finally:
        cv2.setNumThreads(threads)


def timed(fn, path: str) -> tuple[float, float, int]:
    c0, t0 = time.process_time(), time.perf_counter()
    n = fn(path)
    return time.perf_counter() - t0, time.process_time() - c0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="runs of ours and floor per video")
    ap.add_argument("--baseline-repeats", type=int, default=2, help="runs of the (slow) baseline per video")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "mesodata-bench-faces")
    ap.add_argument("--only", default="", help="comma-separated video names")
    ap.add_argument("--steps", action="store_true", help="only the CPU per step of the face work (a profile)")
    ap.add_argument("--against", type=Path, help="also time this copy of the repository (column `before`)")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    videos = make_videos(args.dir)
    if args.only:
        videos = {k: v for k, v in videos.items() if k in args.only.split(",")}
    ours(videos[next(iter(videos))])  # warm up: imports, cascade, dlib model
    before = against(args.against) if args.against else None
    if before:
        before(videos[next(iter(videos))])
    if args.steps:
        print(f"CPU ms per sampled frame ({SAMPLES} of {N} frames; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores); whole-frame detect runs once per video unless the track is lost")
        rows = {name: steps(path) for name, path in videos.items()}
        cols = list(next(iter(rows.values())))
        print("| video | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
        for name, r in rows.items():
            print(f"| {name} | " + " | ".join(f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k])
                                             for k in cols) + " |")
        return
    print(f"cpu: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {SAMPLES} of {N} frames per video")
    rows = []
    for name, path in videos.items():
        res = {"ours": [], "floor": [], "skip": [], "baseline": [], "before": []}
        for r in range(max(args.repeats, args.baseline_repeats)):
            if r < args.repeats:
                res["floor"].append(timed(floor, path))
                res["skip"].append(timed(skip_floor, path))
                res["ours"].append(timed(ours, path))
                if before:
                    res["before"].append(timed(before, path))
            if r < args.baseline_repeats:
                res["baseline"].append(timed(baseline, path))
        med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v), v[0][2]) if v
               else (math.nan, math.nan, 0) for k, v in res.items()}
        rows.append((name, med))
        print(f"{name:16s} floor {med['floor'][0]:6.3f}s  skip {med['skip'][0]:6.3f}s  ours {med['ours'][0]:6.3f}s "
              f"({med['ours'][2]} faces)  baseline {med['baseline'][0]:7.3f}s ({med['baseline'][2]} faces)"
              + (f"  before {med['before'][0]:6.3f}s ({med['before'][2]} faces)" if before else ""), flush=True)
    print("\n| video | decode floor (s) | skip (s) | ours (s) | baseline (s) | ours / floor | ours / skip "
          "| baseline / ours | CPU s: floor / skip / ours / baseline | faces: ours / baseline |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, m in rows:
        print(f"| {name} | {m['floor'][0]:.3f} | {m['skip'][0]:.3f} | {m['ours'][0]:.3f} | {m['baseline'][0]:.2f} | "
              f"{m['ours'][0] / m['floor'][0]:.2f}x | {m['ours'][0] / m['skip'][0]:.2f}x | "
              f"{m['baseline'][0] / m['ours'][0]:.1f}x | "
              f"{m['floor'][1]:.2f} / {m['skip'][1]:.2f} / {m['ours'][1]:.2f} / {m['baseline'][1]:.2f} | "
              f"{m['ours'][2]}/{SAMPLES} / {m['baseline'][2]}/{SAMPLES} |")
    if before:
        print("\n| video | decode floor (s) | before (s) | ours (s) | before / floor | ours / floor "
              "| CPU s: floor / before / ours | faces: before / ours |")
        print("|---|---|---|---|---|---|---|---|")
        for name, m in rows:
            f, b, o = m["floor"], m["before"], m["ours"]
            print(f"| {name} | {f[0]:.3f} | {b[0]:.3f} | {o[0]:.3f} | {b[0] / f[0]:.2f}x | {o[0] / f[0]:.2f}x | "
                  f"{f[1]:.2f} / {b[1]:.2f} / {o[1]:.2f} | {b[2]}/{SAMPLES} / {o[2]}/{SAMPLES} |")


if __name__ == "__main__":
    main()
