"""Stage 2: frames and faces. Per manifest video, sample frames exactly and cut one 256x256 face
crop per frame (Viola-Jones on a small grayscale copy, a face track, optional dlib check).

One unit per video, one Parquet part per video under WORK/faces/, one row per sampled frame —
also for frames without a face and for videos that could not be decoded (status + reason).
`read(work)` gives every part in manifest order; `extract_faces(path, params)` does the same
work on a single new video (for `mesodata predict`).

Per video, the main thread decodes (pipeline.frames) while one helper thread detects, crops,
verifies and encodes the wanted frames (pipeline.detect): on small videos decoding leaves a core
idle, so the face work runs beside it instead of after it.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from .. import atomic, schema, storage
from ..detect import DetectParams, FaceCropper, resolve_cascade
from ..errors import UserError
from ..frames import Deadline, DecodeTimeout, FrameSampler, count_frames, plan_indices
from ..runner import Output, Param, StageDef, StageRun, Unit, Work, check_params, part_name, run_stage

__all__ = ["STAGE", "run", "read", "iter_parts", "extract_faces", "normalize_params", "DEFAULTS", "STATUSES"]

log = logging.getLogger("mesodata")

NAME = "faces"
VERSION = "3"  # 2: frames turned upright by their display matrix; 3: narrower track search, 112-px dlib check
FOLDER = "faces"
INDEX = "faces/_index.json"
REPORT = "reports/faces.json"
SIZE = 256
STATUSES = ("face", "no_face", "rejected", "truncated", "decode_error")
MANIFEST_COLUMNS = ("source", "label", "method", "group")
# what a unit needs of its manifest row
PLAN_COLUMNS = ("video_id", "path", "status", "error", "frames", "fps", "size_bytes", *MANIFEST_COLUMNS)
QUEUE = 3  # decoded frames waiting for the face thread (bounds memory: a few frames, never the video)

PARAMS: dict[str, Param] = {
    "frames": Param(32, int, 1), "every_seconds": Param(None, float, 0.0, open_low=True),
    "stride": Param(None, int, 1), "margin": Param(1.3, float, 1.0), "verify": Param("dlib", choices=("dlib", "none")),
    "cascade": Param("haarcascade_frontalface_default.xml"), "image_format": Param("png", choices=("png", "jpeg")),
    "quality": Param(95, int, 1, 100), "decode_timeout": Param(300.0, float, 0.0, open_low=True),
    "min_yield": Param(0.5, float, 0.0),
    # Viola-Jones settings (recorded in the stage state and report; not on the command line)
    "scale_factor": Param(1.1, float, 1.0, open_low=True), "min_neighbors": Param(5, int, 0),
    "min_size": Param(24, int, 1), "detect_width": Param(320, int, 32),
    "verify_threshold": Param(-0.5, float),  # added to dlib's HOG threshold when checking a crop (see detect.Verifier)
    "contact_sheet": Param(8, int, 0),  # crops per label row on each source's contact sheet
    "seed": Param(0, int, 0),
}
DEFAULTS: dict[str, Any] = {k: v.default for k, v in PARAMS.items()}
# What does not change a video's rows: changing these redoes the report, not the parts.
_REPORT_ONLY = ("min_yield", "contact_sheet", "seed", "decode_timeout")


def normalize_params(params: dict | None) -> dict:
    """The full parameter set (defaults filled in), checked; raises UserError naming the bad one."""
    params = dict(params or {})
    if params.get("verify") in (False, ""):  # aliases of "none" and "jpeg"
        params["verify"] = "none"
    if params.get("image_format") == "jpg":
        params["image_format"] = "jpeg"
    p = check_params(NAME, PARAMS, params)
    if p["stride"] is not None and p["every_seconds"] is not None:
        raise UserError("give at most one of --stride and --every-seconds")
    try:
        resolve_cascade(str(p["cascade"]))
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    return p


def _parts_fingerprint(p: dict) -> str:
    """What a video's rows depend on: this code's version and the extraction parameters (the
    cascade by content). The manifest is not in it: a changed or new video only changes its own
    unit key, so adding videos never redoes the others."""

    keep = {k: v for k, v in p.items() if k not in _REPORT_ONLY}
    keep["cascade_sha256"] = storage.sha256(resolve_cascade(str(p["cascade"])))
    blob = json.dumps({"stage": NAME, "version": VERSION, "params": keep}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# --- one video ------------------------------------------------------------------------------
def _row(index, *, status, error=None, timestamp=None) -> dict:
    return {"frame_index": index, "timestamp": timestamp, "status": status, "error": error,
            "bbox": None, "crop": None, "verified": None, "image": None}


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _cropper(p: dict) -> FaceCropper:
    dp = DetectParams(scale_factor=p["scale_factor"], min_neighbors=p["min_neighbors"],
                      min_size=p["min_size"], detect_width=p["detect_width"])
    return FaceCropper(str(p["cascade"]), margin=p["margin"], size=SIZE, verify=p["verify"],
                       image_format=p["image_format"], quality=p["quality"], params=dp,
                       verify_threshold=p["verify_threshold"])


def extract_rows(path: str, n_frames: int | None, fps: float | None, p: dict, image_prefix: str = "") -> list[dict]:
    """The rows of one video (no manifest columns): plan, decode exactly, detect, crop, encode.

    Never raises for a bad video: what went wrong is in the rows' status and error. The decode
    timeout counts this video's decoding only (pipeline.frames.Deadline), not loading the models
    or the face work beside it."""
    with Deadline(p["decode_timeout"]) as deadline:
        try:
            return _extract(path, n_frames, fps, p, image_prefix, deadline)
        except DecodeTimeout as exc:  # the alarm landed outside the frame loop
            return [_row(None, status="decode_error", error=str(exc))]


def _extract(path, n_frames, fps, p, image_prefix, deadline) -> list[dict]:
    if n_frames is None or n_frames <= 0:
        try:
            with deadline.running():
                n_frames = count_frames(path, timeout=p["decode_timeout"])
        except DecodeTimeout:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is this video's, recorded
            return [_row(None, status="decode_error", error=f"cannot read the video: {_reason(exc)}")]
    try:
        indices = plan_indices(n_frames, fps, frames=p["frames"], every_seconds=p["every_seconds"],
                               stride=p["stride"])
    except ValueError as exc:
        return [_row(None, status="decode_error", error=str(exc))]
    if not indices:
        return [_row(None, status="decode_error", error="the video has no frames")]

    cropper = _cropper(p)
    done: dict[int, dict] = {}
    failure = None
    sampler = FrameSampler(path, indices, deadline=deadline)
    pool = ThreadPoolExecutor(1, thread_name_prefix="faces")
    pending: collections.deque = collections.deque()

    def finish():
        sf, fut = pending.popleft()
        row = fut.result()
        row.update(frame_index=sf.index, timestamp=sf.timestamp)
        if row["image"] is not None:
            ext = "png" if p["image_format"] == "png" else "jpg"
            row["image"] = {"bytes": row["image"], "path": f"{image_prefix}{sf.index:06d}.{ext}"}
        done[sf.index] = row

    try:
        for sf in sampler:
            pending.append((sf, pool.submit(cropper.process, sf.frame)))
            while len(pending) > QUEUE:
                finish()
        while pending:
            finish()
    except DecodeTimeout as exc:
        failure = f"{exc} (at frame {sampler.decoded})"
    except Exception as exc:  # noqa: BLE001 - a crash on one video must not stop the build
        failure = f"{type(exc).__name__} at frame {sampler.decoded}: {exc}"
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if not failure:  # after a failure the face thread may still be inside a model: drop them
            cropper.close()
    error = failure or sampler.error
    rows = []
    for i in indices:
        if i in done:
            rows.append(done[i])
        elif error:
            rows.append(_row(i, status="decode_error", error=error))
        else:  # the stream ended before this planned frame
            rows.append(_row(i, status="truncated",
                             error=f"the stream ended after {sampler.decoded} frames; {n_frames} were expected"))
    return rows


def _output_schema(manifest_columns: bool) -> pa.Schema:
    s = schema.load(NAME)
    if manifest_columns:
        return s
    return pa.schema([f for f in s if f.name not in MANIFEST_COLUMNS], metadata=s.metadata)


def extract_faces(video_path: str, params: dict | None = None) -> pa.Table:
    """Sample and crop the faces of one video file: the stage's rows without manifest columns
    (video_id is `video_path` as given). For scoring new videos with a trained detector."""
    from ..probe import probe

    p = normalize_params(params)
    path = str(video_path)
    info = probe(path)
    if info["status"] != "ok":
        rows = [_row(None, status="decode_error", error=f"{info['status']}: {info['error']}")]
    else:
        rows = extract_rows(path, info["frames"], info["fps"], p, image_prefix=f"{Path(path).stem}/")
    for r in rows:
        r["video_id"] = path
    table = pa.Table.from_pylist(rows, schema=_output_schema(False))
    return table.replace_schema_metadata({**table.schema.metadata, b"mesodata.faces.params": _params_json(p)})


def _params_json(p: dict) -> bytes:
    return json.dumps(p, sort_keys=True, default=str).encode()


def _unit(payload: dict) -> pa.Table:
    """Runner unit: one manifest video -> its rows, with the manifest's columns."""
    p, m = payload["params"], payload["row"]
    if m["status"] not in ("ok", "unlisted"):
        rows = [_row(None, status="decode_error", error=f"manifest says {m['status']}: {m['error']}")]
    else:
        try:
            with storage.local_copy(payload["path"]) as path:  # a temp copy when the video is on a store
                rows = extract_rows(path, m["frames"], m["fps"], p, image_prefix=f"{m['video_id']}/")
        except Exception as exc:  # noqa: BLE001 - recorded, the build goes on
            rows = [_row(None, status="decode_error", error=f"{type(exc).__name__}: {exc}")]
    return _unit_table(payload, rows)


def _abandoned(payload: dict, reason: str) -> pa.Table:
    """Runner hook: the video whose decoder hung, its worker killed by the executor: one
    decode_error row with the reason (a longer --decode-timeout redoes it, see _forget_timeouts)."""
    return _unit_table(payload, [_row(None, status="decode_error", error=reason)])


def _unit_table(payload: dict, rows: list[dict]) -> pa.Table:
    """A unit's rows with the manifest's columns, as a table carrying the parameters."""
    p, m = payload["params"], payload["row"]
    for r in rows:
        r["video_id"] = m["video_id"]
        for k in MANIFEST_COLUMNS:
            r[k] = m[k]
    table = pa.Table.from_pylist(rows, schema=_output_schema(True))
    return table.replace_schema_metadata({**table.schema.metadata, b"mesodata.faces.params": _params_json(p)})


def _unit_key(m: dict) -> str:
    """video_id plus what identifies its content: a re-encoded or replaced file is redone."""
    sig = json.dumps([m["path"], m["status"], m["size_bytes"], m["frames"]], default=str)
    return f"{m['video_id']}@{hashlib.sha1(sig.encode()).hexdigest()[:12]}"


# --- the stage ------------------------------------------------------------------------------
def _plan(run: StageRun) -> list[Unit]:
    """One unit per manifest video, keyed by its content (see _unit_key)."""
    from . import manifest

    work, p = run.work, run.params
    mtable = manifest.read(work)
    mstate = work.state("manifest") or {}
    data_root = storage.location(mstate.get("params", {}).get("data_root", "."))
    rows = mtable.select(PLAN_COLUMNS).to_pylist()
    run.context["rows"] = rows
    return [Unit(_unit_key(m), {"row": m, "path": storage.join(data_root, m["path"]), "params": p}) for m in rows]


def _combine(run: StageRun) -> Output:
    """The index of the parts (manifest order), the yield report and the contact sheets."""
    work, p, parts, rows = run.work, run.params, run.parts, run.context["rows"]
    index, per_video = [], []
    for k, m in zip(parts.keys, rows):
        t = parts.read(k, columns=["status", "error"])
        st = collections.Counter(t.column("status").to_pylist())
        errors = [e for e in t.column("error").to_pylist() if e]
        timed_out = any("decode timeout" in e for e in errors)
        index.append({"video_id": m["video_id"], "key": k, "part": part_name(k), "rows": t.num_rows,
                      **({"timeout": p["decode_timeout"]} if timed_out else {})})
        per_video.append({"video_id": m["video_id"], "source": m["source"], "label": m["label"],
                          "status": dict(st), "reason": _main_reason(errors)})
    atomic.write_json(work.path(INDEX), {"parts": index})
    report = build_report(per_video, p)
    sheets = contact_sheets(work, p, [(v["source"], v["label"], e["part"]) for v, e in zip(per_video, index)
                                      if v["status"].get("face")])
    report["contact_sheets"] = sheets
    totals = report["totals"]
    counts = {"videos": len(rows), "frames": totals["sampled"], "faces": totals["face"],
              "yield": totals["yield"], **parts.summary,
              "status": {s: totals[s] for s in STATUSES}}
    return Output(report=report, counts=counts, files=[INDEX, *sheets])


def run(work: Work, params: dict | None = None, *, workers: int = 1, executor=None) -> dict:
    """Sample frames and crop faces of every manifest video; write parts, index, report, sheets."""
    return run_stage(work, STAGE, params, workers=workers, executor=executor)


def _forget_timeouts(run: StageRun) -> None:
    """Parts that timed out under a shorter decode timeout are redone with the longer one."""
    try:
        index = json.loads(run.work.path(INDEX).read_text())["parts"]
    except (OSError, ValueError, KeyError):
        return
    for e in index:
        if "timeout" in e and e["timeout"] < run.params["decode_timeout"]:
            run.parts.drop(e["key"])


def _main_reason(errors: list[str]) -> str | None:
    if not errors:
        return None
    return collections.Counter(errors).most_common(1)[0][0]


def build_report(per_video: list[dict], p: dict) -> dict:
    """Face yield per source (frames with a face / frames sampled) and the videos below min_yield."""
    by_source: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    videos: collections.Counter = collections.Counter()
    low = []
    for v in per_video:
        n = sum(v["status"].values())
        by_source[v["source"]].update(v["status"])
        videos[v["source"]] += 1
        y = v["status"].get("face", 0) / n if n else 0.0
        if y < p["min_yield"]:
            low.append({"video_id": v["video_id"], "label": v["label"], "yield": round(y, 3), "sampled": n,
                        **{s: v["status"].get(s, 0) for s in STATUSES}, "reason": v["reason"]})

    def line(name, c, nv):
        n = sum(c.values())
        return {"source": name, "videos": nv, "sampled": n, **{s: c.get(s, 0) for s in STATUSES},
                "yield": round(c.get("face", 0) / n, 3) if n else 0.0}

    table = [line(s, by_source[s], videos[s]) for s in sorted(by_source)]
    total = collections.Counter()
    for c in by_source.values():
        total.update(c)
    detect = {k: p[k] for k in ("scale_factor", "min_neighbors", "min_size", "detect_width", "cascade",
                                "margin", "verify", "verify_threshold")}
    return {"table": table, "totals": line("all", total, sum(videos.values())), "min_yield": p["min_yield"],
            "below_min_yield": low, "detection": detect, "crop_size": SIZE,
            "sampling": {k: p[k] for k in ("frames", "every_seconds", "stride")}}


def print_report(report: dict, limit: int = 15) -> None:
    from ..report import print_first, print_table

    cols = ["source", "videos", "sampled", *STATUSES, "yield"]
    print_table("Faces: face yield per source (frames with a face / frames sampled)",
                [*report["table"], report["totals"]], cols)
    low = report["below_min_yield"]
    if low:
        print(f"  {len(low)} video(s) below the minimum yield {report['min_yield']:g} (all in {REPORT}):")
        print_first([f"{v['yield']:.2f}  {v['video_id']}: {v['reason'] or 'no face found'}" for v in low], limit)
    for s in report.get("contact_sheets", []):
        print(f"  contact sheet: {s}")


# --- reading --------------------------------------------------------------------------------
def index(work: Work) -> list[dict]:
    """The faces stage's parts, in manifest order: {key, part, rows, video_id} each."""
    try:
        return json.loads(work.path(INDEX).read_text())["parts"]
    except FileNotFoundError:
        raise UserError(f"no face crops in {work.root}: run `mesodata build` first") from None


def iter_parts(work: Work, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """Each video's table, in manifest order (one part in memory at a time)."""
    folder = work.path(FOLDER)
    for e in index(work):
        path = folder / e["part"]
        if not path.exists():
            raise UserError(f"face part {path} is missing: rerun `mesodata build` to redo it")
        yield storage.read_table(path, columns=columns)


def read(work: Work, columns: list[str] | None = None) -> pa.Table:
    """Every sampled frame of every video, in manifest order, as one table."""
    tables = list(iter_parts(work, columns))
    if not tables:
        s = schema.load(NAME)
        return (s if columns is None else pa.schema([s.field(c) for c in columns])).empty_table()
    return pa.concat_tables(tables)


# --- contact sheets -------------------------------------------------------------------------
def contact_sheets(work: Work, p: dict, with_faces: list[tuple[str, int | None, str]]) -> list[str]:
    """One PNG per source: a row of random crops per label (real, fake, and "no label" in grey for
    videos without one, e.g. DFDC full parts' test videos), for a glance.
    `with_faces`: (source, label, part file) of each video that has at least one face."""
    from .. import cells, plots

    n = p["contact_sheet"]
    if n <= 0:
        return []
    folder = work.path(FOLDER)
    by_source: dict[str, dict] = collections.defaultdict(lambda: collections.defaultdict(list))
    for source, label, part in with_faces:
        by_source[source][label].append(part)
    out = []
    for source in sorted(by_source):
        rng = random.Random(f"{p['seed']}:{source}")
        by_label = {}
        for lab in (0, 1, None):
            parts = by_source[source].get(lab)
            if not parts:
                continue
            picks = rng.sample(parts, min(n, len(parts)))
            picks += [rng.choice(parts) for _ in range(n - len(picks))]  # few videos: more frames of them
            by_label[lab] = []
            for part in picks:
                t = storage.read_table(folder / part, columns=["video_id", "frame_index", "status", "image"])
                row = rng.choice([r for r in t.to_pylist() if r["status"] == "face"])
                by_label[lab].append((cells.decode(row["image"]["bytes"]),
                                      f"{row['video_id'].rsplit('/', 1)[-1]} #{row['frame_index']}"))
        fig = plots.face_sheet(f"{source}: random face crops ({SIZE}x{SIZE}), one row per label", by_label)
        rel = f"reports/faces-{source}.png"
        atomic.write_bytes(work.path(rel), plots.png_bytes(fig))
        out.append(rel)
    return out


STAGE = StageDef(
    NAME, VERSION, upstream=("manifest",), check=normalize_params, plan=_plan, unit=_unit, unit_schema=NAME,
    abandoned=_abandoned,
    parts_at=FOLDER, parts_key=lambda run: _parts_fingerprint(run.params), before_map=_forget_timeouts,
    combine=_combine, print_report=print_report,
    up_to_date=lambda st, p: f"up to date ({st['counts']['videos']} videos, {st['counts']['frames']} frames), "
                             "nothing to do")
