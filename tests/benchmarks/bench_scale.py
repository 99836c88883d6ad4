"""Benchmark: the full combined benchmark (FF++ c23 + DFD, Celeb-DF v2, DFDC preview: 21,210 videos)
stage by stage on 2 cores: wall, CPU, peak memory of the process tree, disk; measured where it
can be run here, extrapolated where not (the table says which, and how).

    python tests/benchmarks/bench_scale.py OUT [--what subset,count,table] [--per-group 2] \\
        [--counts 1000,21210] [--count-frames 1] [--frames 32] [--workers 2]

subset  Real videos at the releases' sizes and lengths (tests/benchmarks/standin.py: `--per-group`
        of each of the 13 groups, e.g. FF++ FaceSwap, DFD fakes, Celeb-DF YouTube reals), then every
        stage as the commands run it (manifest, faces --frames F, dedupe, split, shards with the
        paper's augmentations, both exports), each in its own process on `--workers` workers. The
        faces unit is wrapped to log each video's own wall and CPU seconds.
count   The full layout at each of `--counts` videos (the same mix, thinned), every file a hard link
        of a 1 s real clip so the manifest probes real files; the faces stage's output SYNTHETIC
        (standin.synthetic_unit: `--count-frames` distinct real-face crops per video, written by the
        runner as the stage writes its parts), then dedupe, split, shards, exports for real.
        `--layout dfdc-full`: the full DFDC release (50 parts, 119,154 videos) instead, thinned to
        each count; its runs are named count-dfdc-full-N, and `--what memory` tables their peaks.
table   OUT/table.md: at full counts (21,210 videos x F frames):
        manifest  measured at the full count;
        faces     extrapolated: per-video CPU = a + b x pixels decoded, fitted on the subset's
                  videos, summed over all 21,210 videos' drawn sizes and lengths; wall = that CPU
                  over the subset run's measured parallelism; memory measured (subset, and the
                  client at the full count with synthetic parts);
        dedupe, split, shards, exports: the large count run plus the marginal CPU and bytes per
                  video-with-one-crop between the two count runs, for every further crop (crops =
                  videos x F x the subset's face yield; an over-estimate: it counts per-video work
                  again per crop); memory measured at both counts;
        wall      on 2 idle cores: CPU / 2 (split: CPU, one process). The walls measured here are
                  printed beside: the shared machine gave these runs a fraction of a core.
Each stage runs in a subprocess; its whole process tree's RSS is sampled every 0.1 s with psutil
(peak = the largest sum), CPU = every process's last user + system seconds. Disk = bytes the stage
added under the work dir (and the export folder). The machine's load average is recorded per stage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks import standin

SOURCES = ["celebdf", "dfdc", "ff++"]
SPLITS = Path("/work/shared/datasets/faceforensics")  # the official FF++ pairs, when present
STAGES = ("manifest", "faces", "dedupe", "split", "shards", "export-deepfakebench", "export-imagefolder")
FULL = 21_210


# --- one stage, in a child process --------------------------------------------------------------
def run_child(work: Path, stage: str, cfg: dict) -> None:
    """Run one stage as `mesodata build`/`split`/`export-dataset` would (same parameters)."""
    from dataclasses import replace

    from mesodata.pipeline.runner import LocalExecutor, Work, run_stage
    from mesodata.pipeline.stages import dedupe, export, faces, manifest, shards, split

    w, k = Work(work), cfg["workers"]
    if stage.startswith("export-"):
        fmt = stage.split("-", 1)[1]
        run_stage(w, export.STAGES[fmt], {"out": cfg["export_dir"] + "/" + fmt}, workers=k)
        return
    ex = LocalExecutor(k)
    try:
        if stage == "manifest":
            run_stage(w, manifest.STAGE, {"data_root": cfg["data"], "sources": cfg.get("sources", SOURCES),
                                          "overrides": None, "compression": "c23", "ff_splits": None},
                      workers=k, executor=ex)
        elif stage == "faces":
            sd = faces.STAGE
            if cfg.get("synthetic"):
                sd = replace(sd, unit=standin.synthetic_unit)
            elif cfg.get("times"):
                sd = replace(sd, unit=standin.timed_unit)
            run_stage(w, sd, {"frames": cfg["frames"]}, workers=k, executor=ex)
        elif stage == "dedupe":
            run_stage(w, dedupe.STAGE, {}, workers=k, executor=ex)
        elif stage == "split":
            run_stage(w, split.STAGE, {"seed": 0, "ratios": [70, 20, 10], "protocol": "default",
                                       "join_duplicates": "near"})
        elif stage == "shards":
            run_stage(w, shards.STAGE, {"shard_size": 256 * 2**20, "augment": "paper", "perturb_test": False,
                                        "seed": 0, "augment_storage": cfg["augment_storage"]}, workers=k, executor=ex)
    finally:
        ex.close()


# --- measuring a child ----------------------------------------------------------------------------
def _size(path: Path) -> int:
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_size
            except OSError:
                pass
    return total


def measure(work: Path, stage: str, cfg: dict, log: Path) -> dict:
    """Wall, CPU and peak RSS of the stage's process tree, and the bytes it added."""
    disk0 = _size(work) + _size(Path(cfg["export_dir"]))
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}",
           "BENCH_SCALE_TIMES": cfg.get("times", "")}
    cmd = [sys.executable, __file__, "_child", str(work), stage, json.dumps(cfg)]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"\n$ {stage}\n")
        fh.flush()
        proc = psutil.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        peak, cpu = 0, {}
        while proc.poll() is None:
            rss = 0
            try:
                tree = [proc, *proc.children(recursive=True)]
            except psutil.Error:
                tree = [proc]
            for p in tree:
                try:
                    with p.oneshot():
                        rss += p.memory_info().rss
                        t = p.cpu_times()
                        cpu[p.pid] = t.user + t.system
                except psutil.Error:
                    pass
            peak = max(peak, rss)
            time.sleep(0.1)
    wall = time.perf_counter() - t0
    if proc.returncode:
        return {"stage": stage, "failed": f"exit {proc.returncode}; see {log}"}
    return {"stage": stage, "wall_s": wall, "cpu_s": sum(cpu.values()), "peak_mib": peak / 2**20,
            "disk_bytes": _size(work) + _size(Path(cfg["export_dir"])) - disk0, "processes": len(cpu),
            "load": [load0, os.getloadavg()[0]]}


def run_all(out: Path, data: Path, name: str, cfg: dict, stages=STAGES) -> list[dict]:
    """Run `stages` in order; from a later stage than the first, on the work dir a previous run left."""
    work, log = out / f"{name}-work", out / f"{name}.log"
    if stages[0] == STAGES[0]:
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(out / f"{name}-export", ignore_errors=True)
    cfg = {**cfg, "data": str(data), "export_dir": str(out / f"{name}-export")}
    rows = []
    for stage in stages:
        r = measure(work, stage, cfg, log)
        if "failed" in r:  # e.g. a subset too small for the split's groups: the table takes what it has
            print(f"  {name} {stage} failed ({r['failed']})", flush=True)
            break
        rows.append(r)
        print(f"  {name} {stage}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, {r['peak_mib']:.0f} MiB, "
              f"{r['disk_bytes'] / 1e6:.1f} MB (load {r['load'][0]:.1f})", flush=True)
    rows.append({"stage": "_counts", **counts(work)})
    rows = _merged(out / f"{name}.json", rows)
    (out / f"{name}.json").write_text(json.dumps(rows, indent=1))
    return rows


def _merged(path: Path, rows: list[dict]) -> list[dict]:
    """This run's rows, with those of stages it did not run kept from an earlier run's file."""
    ran = {r["stage"] for r in rows}
    earlier = json.loads(path.read_text()) if path.exists() else []
    by_stage = {r["stage"]: r for r in earlier if r["stage"] not in ran} | {r["stage"]: r for r in rows}
    by_stage["_counts"] = next((r for r in earlier if r["stage"] == "_counts"), {}) | by_stage.get("_counts", {})
    return [by_stage[s] for s in (*STAGES, "_counts") if s in by_stage]


def counts(work: Path) -> dict:
    import pyarrow.parquet as pq
    from mesodata.pipeline.errors import UserError
    from mesodata.pipeline.runner import Work
    from mesodata.pipeline.stages import faces

    m = pq.read_table(work / "manifest.parquet", columns=["status"]).column(0).to_pylist()
    out = {"videos": len(m), "videos_ok": sum(s == "ok" for s in m)}
    try:  # a run of the manifest stage alone has no faces yet
        status = faces.read(Work(work), columns=["status"]).column(0).to_pylist()
    except UserError:
        return out
    return {**out, "rows": len(status), "crops": sum(s == "face" for s in status)}


# --- the two runs -------------------------------------------------------------------------------
def subset_run(out: Path, args) -> None:
    plan = standin.subset(standin.combined(0, SPLITS), args.per_group)
    data = out / "subset-data"
    t0 = time.perf_counter()
    standin.write_real(data, plan)
    (out / "subset-plan.json").write_text(json.dumps(
        {v.rel: {"group": v.group, "size": v.size, "frames": v.frames} for v in plan.videos}))
    print(f"subset: {len(plan.videos)} real videos written in {time.perf_counter() - t0:.0f} s", flush=True)
    times = out / "subset-times"
    shutil.rmtree(times, ignore_errors=True)
    times.mkdir()
    run_all(out, data, "subset", {"workers": args.workers, "frames": args.frames, "times": str(times),
                                       "augment_storage": args.augment_storage}, args.stages)


LAYOUTS = {"combined": (lambda: standin.combined(0, SPLITS), SOURCES),
           "dfdc-full": (lambda: standin.dfdc_full(0), ["dfdc"])}


def count_name(layout: str, n: int) -> str:
    return f"count-{n}" if layout == "combined" else f"count-{layout}-{n}"


def count_run(out: Path, args, n: int) -> None:
    full, sources = LAYOUTS[args.layout]
    plan = standin.thin(full(), n)
    name = count_name(args.layout, n)
    data = out / f"{name}-data"
    clips = out / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    clip = [standin.tiny_clip(clips / f"c{k}.mp4", k) if not (clips / f"c{k}.mp4").exists() else clips / f"c{k}.mp4"
            for k in range(4)]
    if not data.exists():
        standin.write_links(data, plan, clip)
    print(f"count {n}: {len(plan.videos)} linked videos", flush=True)
    run_all(out, data, name, {"workers": args.workers, "frames": args.count_frames, "synthetic": True,
                              "augment_storage": args.augment_storage, "sources": sources}, args.stages)


def memory_table(out: Path, layout: str, counts_: list[int]) -> str:
    """Peak memory of each stage's process tree at each count (the count runs' own figures)."""
    runs = [(n, _rows(out / f"{count_name(layout, n)}.json")) for n in counts_]
    runs = [(r["_counts"]["videos"], r) for _, r in runs]
    lo, hi = runs[0][0], runs[-1][0]
    lines = ["| stage | " + " | ".join(f"{n:,} videos" for n, _ in runs) + f" | {hi:,} / {lo:,} |",
             "|---|" + "---|" * (len(runs) + 1)]
    for st in STAGES:
        peaks = [r[st]["peak_mib"] if st in r else None for _, r in runs]
        cells = [f"{p:,.0f} MiB" if p else "—" for p in peaks]
        ratio = f"×{peaks[-1] / peaks[0]:.2f}" if peaks[0] and peaks[-1] else "—"
        lines.append(f"| {st} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines) + "\n"


def floor_run(out: Path) -> None:
    """The decode floor per subset video (PyAV, one thread, every frame; then only reference frames;
    then only keyframes): what the faces stage cannot go below while it decodes every frame."""
    import av

    plan = json.loads((out / "subset-plan.json").read_text())
    rows = []
    for rel, v in plan.items():
        r = {"rel": rel, "px": v["size"][0] * v["size"][1] * v["frames"]}
        for skip in ("DEFAULT", "NONREF", "NONKEY"):
            c0 = time.process_time()
            with av.open(str(out / "subset-data" / rel)) as c:
                st = c.streams.video[0]
                st.codec_context.skip_frame = skip
                r[f"{skip}_frames"] = sum(1 for _ in c.decode(st))
            r[f"{skip}_cpu_s"] = time.process_time() - c0
        rows.append(r)
    (out / "floor.json").write_text(json.dumps(rows, indent=1))
    print(f"decode floor measured on {len(rows)} videos", flush=True)


def floor_model(out: Path) -> dict:
    rows = json.loads((out / "floor.json").read_text())
    px = sum(r["px"] for r in rows)
    full = sum(v.size[0] * v.size[1] * v.frames for v in standin.combined(0, SPLITS).videos)
    return {k: sum(r[f"{k}_cpu_s"] for r in rows) / px * full for k in ("DEFAULT", "NONREF", "NONKEY")} | {
        "mpx_per_s": px / sum(r["DEFAULT_cpu_s"] for r in rows) / 1e6,
        "nonref_frames": sum(r["NONREF_frames"] for r in rows) / sum(r["DEFAULT_frames"] for r in rows)}


# --- the table ----------------------------------------------------------------------------------
def _rows(path: Path) -> dict[str, dict]:
    return {r["stage"]: r for r in json.loads(path.read_text())}


def faces_model(out: Path) -> dict:
    """Per-video faces CPU = a + b * pixels decoded (least squares on the subset), and its sum at full counts."""
    from mesodata.pipeline.probe import probe

    xs, ys, walls = [], [], []
    for f in (out / "subset-times").glob("*.jsonl"):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            info = probe(r["path"])  # the file's own size and length
            xs.append(info["width"] * info["height"] * info["frames"])
            ys.append(r["cpu_s"])
            walls.append(r["wall_s"])
    x, y = np.array(xs, float), np.array(ys, float)
    b, a = np.polyfit(x, y, 1)
    full = standin.combined(0, SPLITS)
    px = np.array([v.size[0] * v.size[1] * v.frames for v in full.videos], float)
    resid = y - (a + b * x)
    return {"a_s": a, "b_s_per_mpx": b * 1e6, "videos": len(x), "r2": 1 - resid.var() / y.var(),
            "full_cpu_s": float((a + b * px).sum()), "full_gpx": px.sum() / 1e9,
            "subset_cpu_per_video": float(y.mean()), "subset_wall_per_video": float(np.mean(walls)),
            "median_wall_per_video": float(np.median(walls))}


def _t(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min" if s >= 60 else f"{s:.0f} s"


def table(out: Path, counts_: list[int]) -> str:
    """The stage table at full counts. Count-bound stages: the large count run plus the marginal cost
    per video (large minus small run, each video one crop) for every further video or crop.
    Wall: on an idle 2-core machine, CPU / 2 for stages that run on the workers (the shared machine
    here gave the runs 0.2-0.5 of a core: its walls are reported beside, not used)."""
    sub = _rows(out / "subset.json")
    big, small = max(counts_), min(counts_)
    cb, cs = _rows(out / f"count-{big}.json"), _rows(out / f"count-{small}.json")
    sc, nb, ns = sub["_counts"], cb["_counts"]["videos"], cs["_counts"]["videos"]
    fm = faces_model(out)
    yield_ = sc["crops"] / sc["rows"]
    per_video = sc["rows"] / sc["videos"]
    full_crops = FULL * per_video * yield_
    # real crops' bytes against the synthetic ones' (noisier, larger): for the disk of what copies them
    real_bytes = sub["faces"]["disk_bytes"] / sc["crops"] / (cb["faces"]["disk_bytes"] / cb["_counts"]["crops"])
    lines = [(f"{FULL:,} videos x {per_video:.0f} frames, ~{full_crops / 1e3:,.0f}k face crops (the subset's face "
             f"yield, {100 * yield_:.0f} %), 2 workers:"), "",
             f"| stage | wall, 2 idle cores | CPU | peak memory, {ns:,} → {nb:,} videos | disk | how |",
             "|---|---|---|---|---|---|"]
    tot = [0.0, 0.0, 0.0]
    for st in STAGES:
        b, s_ = cb[st], cs[st]
        d_cpu = (b["cpu_s"] - s_["cpu_s"]) / (nb - ns)
        d_disk = (b["disk_bytes"] - s_["disk_bytes"]) / (nb - ns)
        if st == "faces":
            u = sub["faces"]
            cpu = fm["full_cpu_s"]
            disk = u["disk_bytes"] / sc["crops"] * full_crops
            how = (f"extrapolated: per video {fm['a_s']:.2f} s + {1e3 * fm['b_s_per_mpx']:.2f} ms per Mpx decoded, "
                   f"fitted on the subset's {fm['videos']} real-size videos (R² {fm['r2']:.2f}), summed over the "
                   f"full plan's {fm['full_gpx'] / 1e3:.1f} Tpx")
        else:
            units = FULL if st == "manifest" else full_crops  # what the stage's cost follows
            cpu = b["cpu_s"] + d_cpu * (units - nb)
            disk = b["disk_bytes"] + d_disk * (units - nb) * (1 if st in ("manifest", "split") else real_bytes)
            how = (f"measured at {nb:,} videos{'' if st == 'manifest' else ' x 1 crop'}; + {d_cpu * 1e3:.1f} ms CPU "
                   f"per further {'video' if st == 'manifest' else 'crop'} ({small:,} → {big:,} run)")
        wall = cpu if st == "split" else cpu / 2
        mem = f"{s_['peak_mib']:.0f} → {b['peak_mib']:.0f} MiB (x{b['peak_mib'] / s_['peak_mib']:.2f})"
        if st == "faces":
            mem += f"; {sub['faces']['peak_mib']:.0f} on the real-size subset"
        tot = [tot[0] + wall, tot[1] + cpu, tot[2] + disk]
        lines.append(f"| {st} | {_t(wall)} | {_t(cpu)} | {mem} | {disk / 1e9:.1f} GB | {how} |")
    lines.append(f"| **all** | **{_t(tot[0])}** | **{_t(tot[1])}** | | **{tot[2] / 1e9:.0f} GB** | |")
    loads = [r["load"][0] for r in (*sub.values(), *cb.values(), *cs.values()) if "load" in r]
    lines += ["", f"Measured walls here (load {min(loads):.0f}-{max(loads):.0f} on 2 cores, shared): faces on the "
              f"subset {fm['median_wall_per_video']:.1f} s per video (median) for {fm['subset_cpu_per_video']:.1f} s "
              f"CPU; count run at {nb:,}: " + ", ".join(f"{st} {_t(cb[st]['wall_s'])}" for st in STAGES) + "."]
    if "split" not in sub:
        lines.append("The subset's 26 videos hold too few groups for the split (it refuses, as it should): split, "
                     "shards and exports are measured on the count runs only (synthetic crops; their disk scaled "
                     f"by the real crops' size, x{real_bytes:.2f}).")
    if (out / "floor.json").exists():
        f = floor_model(out)
        lines.append(f"Decode floor (PyAV, every frame, {f['mpx_per_s']:.0f} Mpx/s on one core): {_t(f['DEFAULT'])} "
                     f"CPU for the whole benchmark; decoding only reference frames {_t(f['NONREF'])} "
                     f"({100 * f['nonref_frames']:.0f} % of frames), only keyframes {_t(f['NONKEY'])}.")
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    return text


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        run_child(Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--what", default="subset,floor,count,table")
    ap.add_argument("--per-group", type=int, default=2, help="real videos per group (13 groups) in the subset")
    ap.add_argument("--counts", default="1000,10000", help=f"count runs (the mix thinned; {FULL} for all)")
    ap.add_argument("--layout", choices=sorted(LAYOUTS), default="combined",
                    help="what the count runs thin: the combined benchmark or the full DFDC release")
    ap.add_argument("--count-frames", type=int, default=1, help="synthetic crops per video in the count runs")
    ap.add_argument("--frames", type=int, default=32, help="faces --frames on the subset (the default)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--augment-storage", choices=["materialized", "on-read"], default="materialized",
                    help="the shards' --augment-storage (give on-read its own OUT)")
    ap.add_argument("--stages", default=",".join(STAGES),
                    help="stages to run, in order; from a later one than manifest, on the work dir left by a run")
    args = ap.parse_args()
    args.stages = [s for s in STAGES if s in args.stages.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    what = args.what.split(",")
    ns = [int(n) for n in args.counts.split(",")]
    if "subset" in what:
        subset_run(args.out, args)
    if "floor" in what:
        floor_run(args.out)
    if "count" in what:
        for n in ns:
            count_run(args.out, args, n)
    if "table" in what:
        print(table(args.out, ns))
    if "memory" in what:
        print(memory_table(args.out, args.layout, ns))


if __name__ == "__main__":
    main()
