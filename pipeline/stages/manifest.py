"""Stage 1: the manifest, one row per video of every chosen source, each file probed."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from pathlib import Path

import pyarrow as pa

from .. import schema, storage
from ..errors import UserError
from ..probe import probe
from ..runner import Output, Param, StageDef, StageRun, Unit, Work, run_stage
from ..runner import check_params as _check_declared
from ..sources import ADAPTERS, config

log = logging.getLogger("mesodata")

NAME = "manifest"
VERSION = "2"  # 2: width and height as displayed (rotation metadata)
OUTPUT = "manifest.parquet"
REPORT = "reports/manifest.json"
CHUNK = 32  # videos per unit: probing is quick, so a part per video would be mostly overhead


def _absolute(p):
    return p if storage.is_remote(p) else p.resolve()


def source_roots(data_root, sources: list[str], overrides: dict[str, str]) -> dict[str, Path]:
    """Each source's folder: data_root/<its folder name> or its --source-root (local or URL)."""
    unknown = [s for s in [*sources, *overrides] if s not in ADAPTERS]
    if unknown:
        raise UserError(f"unknown source {unknown[0]!r}; choose from {', '.join(ADAPTERS)}")
    storage.check_store(data_root, "data root")
    if not data_root.is_dir():
        raise UserError(f"data root {data_root} does not exist")
    roots = {}
    for s in sources:
        root = storage.location(overrides[s]) if s in overrides else data_root / config(s)["folder"]
        if storage.is_remote(root) != storage.is_remote(data_root):
            raise UserError(f"--source-root {s}={root}: must be on the same storage as --data-root {data_root}")
        if not root.is_dir():
            raise UserError(f"{s}: folder {root} does not exist (use --source-root {s}=PATH)")
        roots[s] = _absolute(root)
    return roots


def list_all(data_root, roots: dict[str, Path], compression: str, ff_splits: Path | None):
    """Every source's rows (before probing) and its report notes."""
    listings = {}
    for s, root in roots.items():
        storage.list_once(root)
        listings[s] = ADAPTERS[s].list_source(root, _absolute(data_root), compression=compression,
                                              split_dir=ff_splits)
    return listings


def _listing_digest(rows: list[dict], data_root) -> str:
    """Changes when a file appears, vanishes or changes on disk, so the manifest is redone."""
    h = hashlib.sha256()
    for r in rows:
        sig = storage.signature(storage.join(data_root, r["path"]))
        h.update(json.dumps([r["video_id"], r["status"], r["group"], r["official_split"], sig]).encode())
    return h.hexdigest()


def _probe_rows(payload: tuple) -> pa.Table:
    data_root, rows = payload
    out = []
    for r in rows:
        r = {k: v for k, v in r.items() if k != "links"}
        probed = probe(storage.join(data_root, r["path"])) if r["status"] in ("ok", "unlisted") else {}
        if probed:
            if probed["status"] != "ok":
                r["status"], r["error"] = probed["status"], probed["error"]
            r.update({k: v for k, v in probed.items() if k not in ("status", "error")})
        out.append(r)
    return pa.Table.from_pylist(out, schema=schema.load(NAME))


PARAMS = {"data_root": Param(None), "sources": Param(None), "overrides": Param(None), "compression": Param("c23"),
          "ff_splits": Param(None)}


def check_params(params: dict) -> dict:
    """data_root and sources (required), overrides {source: folder}, compression, ff_splits."""
    p = _check_declared(NAME, PARAMS, params)
    for name in ("data_root", "sources"):
        if p[name] is None:
            raise UserError(f"The {name!r} parameter of manifest is required.")
    p["sources"] = list(p["sources"])
    p["overrides"] = dict(p["overrides"] or {})
    return p


def _identify(work: Work, p: dict) -> tuple[dict, dict]:
    """List every source: the fingerprint holds the roots and a digest of the listing, so a file
    that appears, vanishes or changes on disk redoes the manifest."""
    data_root = storage.location(p["data_root"])
    roots = source_roots(data_root, p["sources"], p["overrides"])
    listings = list_all(data_root, roots, p["compression"], p["ff_splits"])
    rows = [r for s in p["sources"] for r in listings[s].rows]
    key = {"data_root": str(_absolute(data_root)), "sources": p["sources"],
           "roots": {s: str(r) for s, r in roots.items()}, "compression": p["compression"],
           "listing": _listing_digest(rows, data_root)}
    return key, {"data_root": data_root, "listings": listings, "rows": rows}


def _plan(run: StageRun) -> list[Unit]:
    rows, data_root = run.context["rows"], run.context["data_root"]
    return [Unit(f"chunk-{i // CHUNK:06d}", (data_root, rows[i:i + CHUNK])) for i in range(0, len(rows), CHUNK)]


def _combine(run: StageRun) -> Output:
    table = run.parts.table()
    if table is None:
        table = schema.load(NAME).empty_table()
    report = build_report(table, run.context["listings"])
    counts = {"videos": table.num_rows, **run.parts.summary, "ok": report["status"].get("ok", 0)}
    return Output(report=report, counts=counts, table=table)


def run(work: Work, data_root, sources: list[str], *, overrides: dict[str, str] | None = None,
        compression: str = "c23", ff_splits: Path | None = None, workers: int = 1, executor=None) -> dict:
    """List every source, probe every file, write manifest.parquet and its report."""
    params = {"data_root": data_root, "sources": sources, "overrides": overrides, "compression": compression,
              "ff_splits": ff_splits}
    return run_stage(work, STAGE, params, workers=workers, executor=executor)


def build_report(table: pa.Table, listings: dict) -> dict:
    """Videos per source / method / label / status, and every video that is not ok. Counted in Arrow:
    a Python dict per video would cost ~1.5 KB, 180 MB at the full DFDC's 119k videos."""
    import pyarrow.compute as pc

    keys = ["source", "method", "label", "status"]
    per = table.group_by(keys, use_threads=False).aggregate(
        [("status", "count", pc.CountOptions(mode="all"))]).to_pylist()
    status = pc.value_counts(table["status"]).to_pylist()  # in order of first appearance
    bad = table.filter(pc.not_equal(table["status"], "ok")).select(["path", "status", "error"])
    return {
        "videos": table.num_rows,
        "status": {s["values"]: s["counts"] for s in status},
        "table": [{**{k: r[k] for k in keys}, "videos": r["status_count"]}
                  for r in sorted(per, key=lambda r: tuple(str(r[k]) for k in keys))],
        "problems": bad.to_pylist(),
        "sources": {s: {"notes": l.notes, "expected": l.expected,
                        "held": dict(Counter(r["method"] for r in l.rows))}
                    for s, l in listings.items()},
    }


def print_report(report: dict, limit: int = 15) -> None:
    from ..report import print_first, print_table

    print_table("Manifest: videos per source / method / label / status", report["table"],
                ["source", "method", "label", "status", "videos"])
    for s, info in report["sources"].items():
        for note in info["notes"]:
            print(f"  note [{s}]: {note}")
        for subset, n in info["held"].items():
            exp = info["expected"].get(subset)
            if exp and n < exp:
                print(f"  shortfall [{s}]: {subset} has {n} of the full release's {exp} videos")
    problems = report["problems"]
    if problems:
        print(f"  {len(problems)} problem(s) (all in reports/manifest.json):")
        print_first([f"{p['status']:<10} {p['path']}: {p['error']}" for p in problems], limit)


def read(work: Work) -> pa.Table:
    return work.read_table(OUTPUT, missing=f"no manifest in {work.root}: run `mesodata build` first")


STAGE = StageDef(
    NAME, VERSION, check=check_params, identify=_identify, plan=_plan, unit=_probe_rows, unit_schema=NAME,
    combine=_combine, artifact=OUTPUT, print_report=print_report,
    up_to_date=lambda st, p: f"up to date ({st['counts']['videos']} videos), nothing to do")
