"""`mesodata build` (manifest -> frames and faces -> dedupe) and `mesodata status`."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from . import storage
from .errors import UserError
from .options import backend_options, work_option, workers_option
from .report import print_table
from .runner import Lock, Work, make_executor, run_stage
from .sources import ADAPTERS
from .sources.names import check_held, check_names

log = logging.getLogger("mesodata")

STAGES = ["manifest", "faces", "dedupe", "split", "shards"]


def parse_sources(text: str) -> list[str]:
    sources = [s.strip() for s in text.split(",") if s.strip()]
    if not sources:
        raise UserError(f"--sources is empty; name at least one of {', '.join(ADAPTERS)}")
    check_names(sources)
    return list(dict.fromkeys(sources))


def parse_overrides(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--source-root expects NAME=PATH, got {v!r}")
        out[name.strip()] = path
    check_names(out, "source in --source-root")
    return out


def run_build(work: Work, data_root: Path, sources: list[str], *, overrides=None, compression="c23",
              ff_splits=None, faces_params: dict | None = None, dedupe_params: dict | None = None,
              workers: int = 1, executor=None) -> dict:
    """Run every build stage in order; each skips itself when its fingerprint is on disk."""
    from .stages import dedupe, faces, manifest

    manifest_params = {"data_root": data_root, "sources": sources, "overrides": overrides,
                       "compression": compression, "ff_splits": ff_splits}
    results = {"manifest": run_stage(work, manifest.STAGE, manifest_params, workers=workers, executor=executor)}
    results["faces"] = run_stage(work, faces.STAGE, faces_params, workers=workers, executor=executor)
    results["dedupe"] = run_stage(work, dedupe.STAGE, dedupe_params, workers=workers, executor=executor)
    return results


@click.command()
@click.option("--sources", default=",".join(ADAPTERS), show_default=True,
              help=f"Comma-separated sources: {', '.join(ADAPTERS)} (manifests/*.yaml, and $MESODATA_SOURCES).")
@click.option("--data-root", required=True, metavar="PATH|URL",
              help="Folder holding Celeb-DF-v2/, DFDC/, FaceForensics++/ as downloaded; or an fsspec "
                   "URL such as s3://bucket/prefix (see docs/cluster.md).")
@work_option()
@click.option("--source-root", "source_root", multiple=True, metavar="NAME=PATH",
              help="Use PATH as the folder of source NAME (repeatable).")
@click.option("--compression", default="c23", show_default=True, type=click.Choice(["raw", "c23", "c40"]),
              help="FF++ compression level to read.")
@click.option("--ff-splits", type=click.Path(path_type=Path, file_okay=False),
              help="Folder with FF++'s train/val/test.json (default: looked for in the FF++ root).")
@click.option("--frames", default=32, show_default=True, help="Frames per video, evenly spaced.")
@click.option("--every-seconds", type=float, help="Sample one frame every S seconds instead.")
@click.option("--stride", type=int, help="Sample every K-th frame instead.")
@click.option("--margin", default=1.3, show_default=True, help="Crop side as a multiple of the face box side.")
@click.option("--verify", type=click.Choice(["dlib", "none"]), default="dlib", show_default=True,
              help="Check each Viola-Jones face with dlib's HOG detector.")
@click.option("--cascade", default="haarcascade_frontalface_default.xml", show_default=True,
              help="OpenCV Haar cascade: a name in cv2.data.haarcascades or a path.")
@click.option("--image-format", type=click.Choice(["png", "jpeg"]), default="png", show_default=True)
@click.option("--quality", default=95, show_default=True, help="JPEG quality (with --image-format jpeg).")
@click.option("--decode-timeout", default=300.0, show_default=True,
              help="Seconds before a video's decoding is abandoned and recorded as decode_error.")
@click.option("--min-yield", default=0.5, show_default=True,
              help="Report videos whose face yield (faces / frames sampled) is below this.")
@click.option("--radius", default=None, type=int,
              help="Hamming radius of the 64-bit pHash for near-duplicates (default: the stage's).")
@click.option("--within-video", "within_video", type=click.Choice(["keep", "drop"]), default=None,
              help="Near-duplicate crops inside one video: keep them as rows, or drop all but the first of "
                   "each cluster (default: keep). Cross-video duplicates join groups either way.")
@workers_option()
@backend_options
@click.option("--fetch", "do_fetch", is_flag=True,
              help="Download first, as `mesodata fetch` does, with --ff-server/--fetch-manifest.")
@click.option("--ff-server", metavar="URL", help="With --fetch: the FF++ server from your terms of use.")
@click.option("--accept-terms", is_flag=True, help="With --fetch: you accept the FF++ terms of use.")
@click.option("--fetch-manifest", type=click.Path(path_type=Path, dir_okay=False),
              help="With --fetch: your download manifest (CSV/Parquet: url, path, size, sha256).")
def build(sources, data_root, work, source_root, compression, ff_splits, frames, every_seconds, stride,
          margin, verify, cascade, image_format, quality, decode_timeout, min_yield, radius, within_video, workers,
          backend, scheduler, do_fetch, ff_server, accept_terms, fetch_manifest):
    """Manifest of every video -> sampled frames -> 256x256 face crops -> dedupe.

    Each stage is cached in WORK: rerunning does only what is missing or stale, and a killed build
    resumes where it stopped.
    """
    if do_fetch:
        from .fetch import fetch

        if storage.is_remote(storage.location(data_root)) or storage.is_remote(storage.location(work)):
            raise UserError("--fetch downloads to a local --data-root and --work; upload to the store afterwards")
        data_root, work = Path(data_root), Path(work)

        report = fetch(data_root, work, ff_server=ff_server, compression=compression,
                       accept_terms=accept_terms, manifest=fetch_manifest)
        if report.failed:
            raise UserError(f"--fetch: {report.summary()}")
    faces_params = {"frames": frames, "every_seconds": every_seconds, "stride": stride, "margin": margin,
                    "verify": verify, "cascade": cascade, "image_format": image_format, "quality": quality,
                    "decode_timeout": decode_timeout, "min_yield": min_yield}
    dedupe_params = {k: v for k, v in (("radius", radius), ("within_video", within_video)) if v is not None}
    sources, overrides = parse_sources(sources), parse_overrides(source_root)
    check_held(data_root, sources, overrides)  # before the work dir is made
    w = Work(work)
    with Lock(w):
        executor = make_executor(backend, workers, scheduler)
        try:
            run_build(w, data_root, sources, overrides=overrides,
                      compression=compression, ff_splits=ff_splits, faces_params=faces_params,
                      dedupe_params=dedupe_params, workers=workers, executor=executor)
        finally:
            executor.close()


@click.command()
@work_option("The work dir to describe.")
def status(work):
    """Each stage of WORK: done, stale (inputs or parameters changed) or missing, with counts."""
    w = Work(work)
    if not w.root.is_dir():
        raise UserError(f"work dir {w.root} does not exist")
    rows = []
    for r in w.status(STAGES):
        counts = ", ".join(f"{k}={v}" for k, v in r["counts"].items() if not isinstance(v, dict))
        rows.append({"stage": r["stage"], "status": r["status"], "finished": r["finished"], "counts": counts})
    print_table(f"Stages of {work}", rows, ["stage", "status", "finished", "counts"])
    runs = detector_runs(w.root)
    if runs:
        print_table(f"Detector runs in {w.path('detector')}", runs,
                    ["run", "models", "model", "frame AUC", "video AUC"])


def _pct(v) -> str:
    return "—" if v is None else f"{100 * float(v):.1f}"


def detector_runs(root) -> list[dict]:
    """One row per model of each finished run in WORK/detector/<run>/metrics.json: its test AUC,
    frame and video ("—" where the run has no test metrics; mean ± std over several seeds)."""
    import json

    folder = root.joinpath("detector")
    try:
        found = sorted(folder.glob("*/metrics.json"), key=lambda p: str(p))
    except OSError:
        return []
    rows = []
    for path in found:
        run = path.parent.name
        if run.startswith("."):  # a training in progress (its temp folder)
            continue
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            rows.append({"run": run, "models": "?", "model": "", "frame AUC": "unreadable metrics.json",
                         "video AUC": ""})
            continue
        listed = ",".join(m.get("config", {}).get("models") or [])
        per_model = []
        if m.get("summary"):  # several seeds
            n = len(m.get("config", {}).get("seeds") or [])
            for name, row in m["summary"].items():
                def pm(key):
                    v = (row or {}).get(key) or {}
                    return "—" if v.get("mean") is None else f"{_pct(v['mean'])} ± {_pct(v.get('std') or 0)}"
                per_model.append((f"{name} ({n} seeds)", pm("frame_auc"), pm("video_auc")))
        else:
            for name, entry in (m.get("models") or {}).items():
                test = (entry or {}).get("test") or {}
                per_model.append((name, _pct((test.get("frame") or {}).get("auc")),
                                  _pct((test.get("video") or {}).get("auc"))))
        if not per_model:
            per_model = [("", "—", "—")]
        for i, (name, f, v) in enumerate(per_model):
            rows.append({"run": run if i == 0 else "", "models": listed if i == 0 else "", "model": name,
                         "frame AUC": f, "video AUC": v})
    return rows
