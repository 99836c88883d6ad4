"""The manifest's report, counted in Arrow, says what counting row by row says: the same counts in
the same order, every video that is not ok in table order, null labels and methods kept apart."""

from collections import Counter

import pyarrow as pa

from mesodata.pipeline.stages.manifest import build_report

ROWS = [  # source, method, label, status, path, error: interleaved, so order matters
    ("ff++", "Deepfakes", 1, "ok", "a.mp4", None),
    ("dfdc", "dfdc", 1, "unreadable", "b.mp4", "moov atom not found"),
    ("ff++", "youtube", 0, "ok", "c.mp4", None),
    ("celebdf", None, None, "unlisted", "d.mp4", None),
    ("dfdc", "original", 0, "missing", "e.mp4", "listed in metadata.json, not on disk"),
    ("ff++", "Deepfakes", 1, "ok", "f.mp4", None),
    ("dfdc", "dfdc", 1, "unreadable", "g.mp4", "no video stream"),
    ("celebdf", "Celeb-real", 0, "ok", "h.mp4", None),
]
KEYS = ["source", "method", "label", "status", "path", "error"]


def test_report_counts_match_counting_row_by_row():
    table = pa.Table.from_pylist([dict(zip(KEYS, r)) for r in ROWS],
                                 schema=pa.schema([("source", pa.string()), ("method", pa.string()),
                                                   ("label", pa.int8()), ("status", pa.string()),
                                                   ("path", pa.string()), ("error", pa.string())]))
    report = build_report(table, {})
    rows = [dict(zip(KEYS, r)) for r in ROWS]
    per = Counter((r["source"], r["method"], r["label"], r["status"]) for r in rows)

    assert report["videos"] == 8
    assert list(report["status"].items()) == [("ok", 4), ("unreadable", 2), ("unlisted", 1), ("missing", 1)]
    assert report["table"] == [{"source": s, "method": m, "label": lab, "status": st, "videos": n}
                               for (s, m, lab, st), n in sorted(per.items(), key=lambda kv: tuple(map(str, kv[0])))]
    assert {"source": "dfdc", "method": "dfdc", "label": 1, "status": "unreadable", "videos": 2} in report["table"]
    assert {"source": "celebdf", "method": None, "label": None, "status": "unlisted", "videos": 1} in report["table"]
    assert report["problems"] == [{"path": r["path"], "status": r["status"], "error": r["error"]}
                                  for r in rows if r["status"] != "ok"]
    assert [p["path"] for p in report["problems"]] == ["b.mp4", "d.mp4", "e.mp4", "g.mp4"]
