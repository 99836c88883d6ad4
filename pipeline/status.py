"""What a work dir holds: each stage (done, stale or missing, with counts) and each detector run
with its test AUC. Reads records only; imports no detector code (no torch)."""

from __future__ import annotations

import json

from .errors import UserError
from .runner import Work

STAGES = ["manifest", "faces", "dedupe", "split", "shards"]


def stage_rows(w: Work) -> list[dict]:
    """One row per curating stage: stage, status, finished, counts (as one text)."""
    if not w.root.is_dir():
        raise UserError(f"work dir {w.root} does not exist")
    rows = []
    for r in w.status(STAGES):
        counts = ", ".join(f"{k}={v}" for k, v in r["counts"].items() if not isinstance(v, dict))
        rows.append({"stage": r["stage"], "status": r["status"], "finished": r["finished"], "counts": counts})
    return rows


def _pct(v) -> str:
    return "—" if v is None else f"{100 * float(v):.1f}"


def detector_runs(root) -> list[dict]:
    """One row per model of each finished run in WORK/detector/<run>/metrics.json: its test AUC,
    frame and video ("—" where the run has no test metrics; mean ± std over several seeds)."""
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
