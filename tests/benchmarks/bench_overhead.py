"""Benchmark: what a build costs per video beyond the video's own work, and the faces/ parts at scale.

    python tests/benchmarks/bench_overhead.py [--videos 1000] [--workers 2] [--parts 120000] [--dir DIR]

1. Tiny clips (1 s, 25 fps, 176x144, real talking-head footage, each clip a different start frame
   and brightness, so every file is a distinct video): `--videos` of them in one DFDC part.
   - work alone: per clip, in this process, one after another, warm: `probe` (what the manifest
     does per video) and `extract_rows` (the faces unit's decode + detect + dlib + PNG);
   - the build's stages through the runner, as `mesodata build` runs them, on `--workers`
     processes: manifest, faces, dedupe, each timed;
   - overhead per video = (stage wall - videos x work alone / workers) / videos: opening,
     scheduling, pickling, writing the part, the stage's combine; dedupe counts whole;
   - then a second build that finds everything done, and `verify`.
2. Parts at scale (`--parts`, 0 to skip): a DFDC part of that many hard links of one tiny clip,
   its manifest built for real; the faces parts written SYNTHETICALLY (the one clip's real part,
   its video_id and manifest columns replaced per video) at the names the stage plans; then timed:
   listing faces/, the faces stage finding every part on disk but not recorded (a resume after a
   kill), the faces stage up to date (a second build), `verify` of the faces stage's record.
Prints a table of medians/figures; the machine's load average is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mesodata.pipeline import footage  # noqa: E402
from mesodata.pipeline.probe import probe  # noqa: E402
from mesodata.pipeline.runner import LocalExecutor, Work, part_name, run_stage  # noqa: E402
from mesodata.pipeline.stages import dedupe, faces, manifest  # noqa: E402

FPS, SECONDS, SIZE = 25, 1, (176, 144)  # QCIF: the smallest size the cascade finds these faces at
PART = "DFDC/dfdc_train_part_0"


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def make_clips(root: Path, n: int) -> list[Path]:
    folder = root / PART
    if (folder / "metadata.json").exists() and len(json.loads((folder / "metadata.json").read_text())) == n:
        return sorted(folder.glob("*.mp4"))
    shutil.rmtree(root, ignore_errors=True)
    folder.mkdir(parents=True)
    src = [cv2.resize(f, SIZE, interpolation=cv2.INTER_AREA) for f in footage.carphone_frames()]
    meta, out = {}, []
    for i in range(n):
        start, gain = (i * 7) % (len(src) - FPS * SECONDS), 0.8 + 0.4 * ((i * 13) % 50) / 50
        frames = [np.clip(f.astype(np.float32) * gain, 0, 255).astype(np.uint8)
                  for f in src[start:start + FPS * SECONDS]]
        path = folder / f"c{i:06d}.mp4"
        footage.write_video(path, frames, fps=FPS)
        meta[path.name] = {"label": "REAL" if i % 2 else "FAKE", "split": "train"}
        out.append(path)
    (folder / "metadata.json").write_text(json.dumps(meta))
    return out


def stage_params(data_root: Path, frames: int) -> tuple[dict, dict]:
    return ({"data_root": data_root, "sources": ["dfdc"], "overrides": None, "compression": "c23",
             "ff_splits": None}, {"frames": frames})


def timed(fn, *a, **kw) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - t0, out


def cpu_seconds() -> float:
    """CPU of this process and of its reaped children (the workers, once shut down)."""
    import resource

    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def stop_workers() -> None:
    """Shut the worker processes down (reaped, so their CPU is counted); the next stage starts new ones."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def tiny_clips(args) -> None:
    data = args.dir / "clips"
    clips = make_clips(data, args.videos)
    mparams, fparams = stage_params(data, args.frames)
    p = faces.normalize_params(fparams)
    sample = clips[:: max(1, len(clips) // args.alone)][: args.alone]
    faces.extract_rows(str(sample[0]), FPS * SECONDS, FPS, p)  # warm: imports, models
    c0 = cpu_seconds()
    probe_s = statistics.median(timed(probe, str(c))[0] for c in sample)
    c1 = cpu_seconds()
    work_s = statistics.median(timed(faces.extract_rows, str(c), FPS * SECONDS, FPS, p)[0] for c in sample)
    cpu_alone = {"manifest": (c1 - c0) / len(sample), "faces": (cpu_seconds() - c1) / len(sample), "dedupe": 0.0}
    print(f"work alone per clip ({len(sample)} clips, medians): probe {probe_s * 1e3:.1f} ms, "
          f"faces unit {work_s * 1e3:.1f} ms ({args.frames} frame(s) sampled); {load()}", flush=True)

    work_dir = args.dir / "work"
    shutil.rmtree(work_dir, ignore_errors=True)
    w = Work(work_dir)
    ex = LocalExecutor(args.workers)
    n, k = len(clips), args.workers
    rows = []
    try:
        for name, sd, params, alone in (("manifest", manifest.STAGE, mparams, probe_s),
                                        ("faces", faces.STAGE, fparams, work_s),
                                        ("dedupe", dedupe.STAGE, {}, 0.0)):
            c0 = cpu_seconds()
            t, _ = timed(run_stage, w, sd, params, workers=k, executor=ex)
            stop_workers()
            cpu = (cpu_seconds() - c0) / n
            rows.append((name, t, alone, (t - n * alone / k) / n, cpu, cpu - cpu_alone[name]))
            print(f"  {name}: {t:.1f} s", flush=True)
        again, _ = timed(lambda: [run_stage(w, sd, prm, workers=k, executor=ex) for sd, prm in
                                  ((manifest.STAGE, mparams), (faces.STAGE, fparams), (dedupe.STAGE, {}))])
    finally:
        ex.close()
    from mesodata.pipeline.verify import verify_work

    verify_s, _ = timed(verify_work, w)
    total = sum(r[1] for r in rows)
    alone = sum(r[2] for r in rows)
    print(f"\n{n} tiny clips, {k} workers ({load()})\n")
    print("| stage | wall (s) | work alone per video (ms) | wall per video (ms) | overhead per video, wall (ms) "
          "| CPU per video (ms) | overhead per video, CPU (ms) |")
    print("|---|---|---|---|---|---|---|")
    for name, t, a, over, cpu, cpu_over in rows:
        print(f"| {name} | {t:.1f} | {a * 1e3:.1f} | {t / n * 1e3:.1f} | {over * 1e3:.1f} | {cpu * 1e3:.1f} "
              f"| {cpu_over * 1e3:.1f} |")
    print(f"| build | {total:.1f} | {alone * 1e3:.1f} | {total / n * 1e3:.1f} | "
          f"{(total - n * alone / k) / n * 1e3:.1f} | {sum(r[4] for r in rows) * 1e3:.1f} | "
          f"{sum(r[5] for r in rows) * 1e3:.1f} |")
    print("(overhead, wall: stage wall per video minus work alone / workers; CPU: every process's CPU per video "
          "minus the work's CPU alone, worker start-up included)")
    print(f"\nsecond build, everything done: {again:.2f} s; verify: {verify_s:.2f} s "
          f"({len(list((work_dir / 'faces').glob('*.parquet')))} faces parts)")


# --- parts at scale ------------------------------------------------------------------------------
def scale(args) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mesodata.pipeline import atomic
    from mesodata.pipeline.verify import verify_work

    n = args.parts
    data = args.dir / f"links-{n}"
    folder = data / PART
    if not (folder / "metadata.json").exists():
        one = make_clips(args.dir / "one", 1)[0]
        folder.mkdir(parents=True, exist_ok=True)
        meta = {}
        for i in range(n):
            name = f"v{i:06d}.mp4"
            if i % 50_000 == 0:  # a file takes at most ~65k hard links (ext4): a fresh copy now and then
                src = data / f"src{i}.mp4"  # outside the dataset's folder
                if not src.exists():
                    shutil.copy(one, src)
            if not (folder / name).exists():
                os.link(src, folder / name)
            meta[name] = {"label": "REAL" if i % 2 else "FAKE", "split": "train"}
        (folder / "metadata.json").write_text(json.dumps(meta))
    mparams, fparams = stage_params(data, args.frames)
    work_dir = args.dir / f"work-{n}"
    shutil.rmtree(work_dir, ignore_errors=True)
    w = Work(work_dir)
    ex = LocalExecutor(args.workers)
    try:
        t_manifest, _ = timed(run_stage, w, manifest.STAGE, mparams, workers=args.workers, executor=ex)
        print(f"{n} videos: manifest (real, {args.workers} workers) {t_manifest:.0f} s; {load()}", flush=True)
        # the faces parts, synthetic: what the stage would write for each video, without the work
        p = faces.normalize_params(fparams)
        fp_params, context = faces.STAGE.identify(w, p)
        from mesodata.pipeline.runner import Stage, StageRun

        run = StageRun(w, p, Stage("faces", faces.VERSION, fp_params, faces.STAGE.upstream), context)
        units = faces.STAGE.plan(run)
        parts = w.parts_dir(run.stage, faces.STAGE.parts_key(run), where=faces.FOLDER)
        template = faces._unit(units[0].payload)
        t0 = time.perf_counter()
        for u in units:
            m = u.payload["row"]
            t = template
            for col in ("video_id", *faces.MANIFEST_COLUMNS):
                t = t.set_column(t.schema.get_field_index(col), col, pa.array([m[col]] * t.num_rows,
                                                                                t.schema.field(col).type))
            atomic.write_parquet(parts / part_name(u.key), t)
        print(f"  wrote {n} synthetic parts in {time.perf_counter() - t0:.0f} s "
              f"({sum(f.stat().st_size for f in parts.glob('*.parquet')) / 1e6:.0f} MB)", flush=True)
        t_list, names = timed(os.listdir, parts)
        t_glob, _ = timed(lambda: list(parts.glob("*.parquet")))
        t_resume, _ = timed(run_stage, w, faces.STAGE, fparams, workers=args.workers, executor=ex)
        print(f"  faces, every part on disk, stage not recorded: {t_resume:.0f} s", flush=True)
        t_done, _ = timed(run_stage, w, faces.STAGE, fparams, workers=args.workers, executor=ex)
    finally:
        ex.close()
    t_verify, found = timed(verify_work, w)
    state_mb = w.path(".state/faces.json").stat().st_size / 1e6
    print(f"\n{n} faces parts (synthetic), {args.workers} workers ({load()})\n")
    print("| step | seconds | per part (ms) |\n|---|---|---|")
    for name, t in (("listing faces/ (os.listdir)", t_list), ("listing faces/*.parquet (glob)", t_glob),
                    ("faces stage: parts on disk, not recorded (resume after a kill)", t_resume),
                    ("faces stage: up to date (a second build)", t_done),
                    (f"verify ({len(found)} files, state {state_mb:.0f} MB)", t_verify)):
        print(f"| {name} | {t:.1f} | {t / n * 1e3:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=1000, help="tiny clips to build (0: skip)")
    ap.add_argument("--parts", type=int, default=120_000, help="faces parts at scale (0: skip)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--frames", type=int, default=1, help="frames sampled per clip (the work, not the overhead)")
    ap.add_argument("--alone", type=int, default=60, help="clips timed alone for the work per video")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "mesodata-bench-overhead")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.videos:
        tiny_clips(args)
    if args.parts:
        scale(args)


if __name__ == "__main__":
    main()
