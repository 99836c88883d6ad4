"""Stage 3: exact and near-duplicate face crops, within a video, across videos and across sources.

Every crop gets two fingerprints (pipeline.phash): a hash of its decoded pixels (exact) and a 64-bit
DCT pHash (near: Hamming distance <= `radius`). Matches are joined into clusters (connected
components). Clusters that
span videos are recorded, never dropped: each video keeps its representative, the row says
`cross_video` / `cross_source`, and the split stage puts such videos in one group.

Radius (default 6), measured on real footage (carphone talking head, H.264 at several CRFs, face
crops 256x256 as the faces stage makes them; LFW faces from skimage for unrelated people):
  same frame re-encoded crf23 vs crf40 (FF++ c23 vs c40), same crop box: median 4, p95 6, max 10
    (<= 6: 97% of frames); crf23 vs crf30: max 6 (100%); crf18 vs crf23: max 4 (100%)
  same, each encode with its own face detection: median 6-10 (<= 6: 39-82% of frames)
  a byte-identical copy in another dataset: 0
  consecutive frames of one video (40 ms): median 4 (<= 6: 81%); 10 frames apart: median 15 (14%)
  unrelated: different people (LFW, 4950 pairs) min 10, 1% <= 16, median 26; LFW vs carphone min
    14; astronaut vs carphone min 20, median 30; unrelated non-face crops min 10
pHash thresholds at the median, so every hash has 32 ones and distances are even: 6 is the last
even radius below the nearest unrelated pair (10) with one step of margin, and it holds >= 95% of a
c23/c40 re-encode's frames.

`within_video` says what happens to a crop that repeats an earlier crop of its own video: "keep"
(default: near-duplicates stay as rows, kept = true with reason `near_duplicate_kept`) or "drop"
(only the first crop of each cluster in a video is kept, as before the option existed);
byte/pixel-identical repeats are dropped either way. Cross-video clusters are recorded, and join
groups for the split, under both. Why keep (README, Dedupe): on the sample, drop kept 163 of 1,211
crops (a static clip keeps 2-3 of 32), and 3-epoch MesoInception-4 reached 51-52 % test frame AUC on
drop's data against 88-97 % on keep's (two seeds; detector under concurrent change: indicative).

A cross-video link needs evidence: two videos are joined when they share an exact crop, or when at
least `min_shared` (default 2) distinct crops of each match the other. A lone near match between two
videos (at a million crops, unrelated faces produce some) is reported as a weak match, not merged,
so chance collisions cannot chain unrelated groups together.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import atomic, cells, phash, storage
from ..errors import UserError
from ..runner import Output, Param, StageDef, StageRun, Unit, Work, check_params, run_stage

log = logging.getLogger("mesodata")

NAME = "dedupe"
VERSION = "1"
OUTPUT = "dedupe.parquet"
REPORT = "reports/dedupe.json"
FIGURE = "reports/dedupe-clusters.png"
FACES_DIR = "faces"
CHUNK = 16  # faces part files per unit
WITHIN_VIDEO = ("keep", "drop")
PARAMS = {"radius": Param(phash.DEFAULT_RADIUS, int, 0, 64), "min_shared": Param(2, int, 1),
          "within_video": Param("keep", choices=WITHIN_VIDEO)}
DEFAULTS = {k: v.default for k, v in PARAMS.items()}
JOIN_MODES = ("near", "exact", "none")  # how duplicates join groups (the split's --join-duplicates)
FLAG_SHARE = 0.30  # a joined group holding more than this share of a source's kept frames is flagged
_FACE_COLUMNS = ["video_id", "frame_index", "source", "label", "method", "group", "status", "image"]

__all__ = ["STAGE", "run", "read", "cluster", "hash_images", "face_files", "join_groups", "group_summary", "NAME", "OUTPUT",
           "DEFAULTS", "JOIN_MODES", "WITHIN_VIDEO"]


def _check_params(params: dict) -> dict:
    return check_params(NAME, PARAMS, params)


def _stage_params(params: dict) -> dict:
    """The parameters that identify the output: within_video only when it is not "drop" (the only
    behaviour before the option existed), so work dirs deduped then keep their fingerprint."""
    return {k: v for k, v in params.items() if not (k == "within_video" and v == "drop")}


# --- per-unit work: fingerprints of every crop ------------------------------------------------
def face_files(work: Work) -> list[str]:
    """The faces stage's Parquet parts, relative to the work dir, in the order of its index."""
    from . import faces

    return [f"{FACES_DIR}/{e['part']}" for e in faces.index(work)]


def hash_images(images: list[dict | None], root: Path | None = None) -> tuple[list, list, list]:
    """(pixel_hash, phash int64, error) per image cell (struct bytes/path; path relative to `root`)."""
    px, ph, err = [], [], []
    for cell in images:
        try:
            rgb = cells.decode(cells.cell_bytes(cell, root))
        except (OSError, ValueError) as exc:
            px.append(None); ph.append(None); err.append(str(exc)[:200])
            continue
        px.append(phash.pixel_hash(rgb))
        ph.append(int(phash.to_signed(phash.phash(rgb))))
        err.append(None)
    return px, ph, err


def _hash_unit(payload: tuple) -> pa.Table:
    root, files = payload  # the work dir (Path or UPath) and face parts relative to it
    out = []
    for rel in files:
        pf = storage.parquet_file(root / rel)
        cols = [c for c in _FACE_COLUMNS if c in pf.schema_arrow.names]
        t = pf.read(columns=cols)
        out.append(_hash_table(t, root, rel))
    return pa.concat_tables(out) if out else _empty_unit()


def _hash_table(t: pa.Table, root: Path, rel: str) -> pa.Table:
    df = {c: t.column(c).to_pylist() if c in t.column_names else [None] * t.num_rows
          for c in _FACE_COLUMNS}
    keep = [i for i in range(t.num_rows)
            if df["image"][i] is not None and (df["status"][i] in (None, "face"))]
    px, ph, err = hash_images([df["image"][i] for i in keep], root)
    return pa.table({
        "video_id": pa.array([df["video_id"][i] for i in keep], pa.string()),
        "frame_index": pa.array([df["frame_index"][i] for i in keep], pa.int64()),
        "source": pa.array([df["source"][i] for i in keep], pa.string()),
        "label": pa.array([df["label"][i] for i in keep], pa.int8()),
        "method": pa.array([df["method"][i] for i in keep], pa.string()),
        "group": pa.array([df["group"][i] for i in keep], pa.string()),
        "pixel_hash": pa.array(px, pa.string()),
        "phash": pa.array(ph, pa.int64()),
        "error": pa.array(err, pa.string()),
        "faces_part": pa.array([rel] * len(keep), pa.string()),
    })


def _empty_unit() -> pa.Table:
    return _hash_table(pa.table({"image": pa.array([], pa.struct([("bytes", pa.binary()), ("path", pa.string())]))}),
                       Path("."), "")


# --- the global step: clusters ------------------------------------------------------------------
def cluster(video: np.ndarray, hashes: np.ndarray, pixel: np.ndarray | None, radius: int,
            min_shared: int = 2) -> dict:
    """Cluster crops: rows are (video code, pHash as int64, pixel-hash code or -1).

    Returns {"cluster": component per row, "pairs": node pairs and
    distances, "links": DataFrame of cross-video evidence (u, v, shared_u, shared_v, min_distance,
    exact, linked)}. Exact and near matches inside a video always join; across videos only between
    linked videos (an exact match, or >= min_shared distinct crops on each side).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(video)
    v = np.asarray(video, np.int64)
    h = phash.to_unsigned(np.asarray(hashes, np.int64))
    uniq, node = np.unique(h, return_inverse=True)
    node = node.reshape(-1)
    ui, uj, ud = phash.neighbours(uniq, radius)
    nv = int(video.max()) + 1 if n else 1
    cell_key, cell = np.unique(node * nv + v, return_inverse=True)
    cell = cell.reshape(-1)
    cell_node, cell_video = cell_key // nv, cell_key % nv

    # closed neighbourhood of every node: itself at 0, and its near nodes
    nn = len(uniq)
    ea = np.concatenate([np.arange(nn), ui, uj])
    eb = np.concatenate([np.arange(nn), uj, ui])
    ed = np.concatenate([np.zeros(nn, np.int64), ud, ud])
    edges = pd.DataFrame({"a": ea, "b": eb, "d": ed})
    cells = pd.DataFrame({"node": cell_node, "cv": cell_video, "cell": np.arange(len(cell_key))})

    # evidence: row r (video u) matches video w when a node within reach of r's node holds w
    rows = pd.DataFrame({"r": np.arange(len(v)), "u": v, "a": node})
    reach = rows.merge(edges, on="a").merge(cells.rename(columns={"node": "b", "cv": "w"}), on="b")
    reach = reach[reach.u != reach.w]
    ev = (reach.groupby(["u", "w"]).agg(shared=("r", "nunique"), dist=("d", "min")).reset_index())
    fwd = ev.rename(columns={"shared": "shared_u"})
    back = ev.rename(columns={"u": "w", "w": "u", "shared": "shared_w", "dist": "dist_w"})
    links = fwd.merge(back[["u", "w", "shared_w"]], on=["u", "w"], how="left").fillna({"shared_w": 0})
    links = links[links.u < links.w].rename(columns={"w": "v", "shared_w": "shared_v", "dist": "min_distance"})
    links["exact"] = False
    if pixel is not None and len(links):
        px = pd.DataFrame({"p": np.asarray(pixel), "u": v})
        px = px[px.p >= 0].drop_duplicates()
        multi = px[px.duplicated("p", keep=False)]
        if len(multi):
            pairs = multi.merge(multi, on="p")
            pairs = pairs[pairs.u_x < pairs.u_y]
            exact = set(zip(pairs.u_x.tolist(), pairs.u_y.tolist()))
            links["exact"] = [(a, b) in exact for a, b in zip(links.u.tolist(), links.v.tolist())]
    links["shared_v"] = links["shared_v"].astype(np.int64)
    links["linked"] = links.exact | ((links.shared_u >= min_shared) & (links.shared_v >= min_shared))
    linked_keys = np.sort((links.u * nv + links.v)[links.linked].to_numpy(np.int64))

    # cell graph: cells of one node or of near nodes join when same video or linked videos
    ce = edges.merge(cells.rename(columns={"node": "a", "cv": "va", "cell": "ca"}), on="a")
    ce = ce.merge(cells.rename(columns={"node": "b", "cv": "vb", "cell": "cb"}), on="b")
    ce = ce[ce.ca < ce.cb]
    lo = np.minimum(ce.va.to_numpy(), ce.vb.to_numpy())
    hi = np.maximum(ce.va.to_numpy(), ce.vb.to_numpy())
    key = lo * nv + hi
    pos = np.searchsorted(linked_keys, key)
    is_linked = (pos < len(linked_keys)) & (linked_keys[np.minimum(pos, max(len(linked_keys) - 1, 0))] == key) \
        if len(linked_keys) else np.zeros(len(key), bool)
    keep = (lo == hi) | is_linked
    nc = len(cell_key)
    g = coo_matrix((np.ones(int(keep.sum()), np.int8), (ce.ca.to_numpy()[keep], ce.cb.to_numpy()[keep])),
                   shape=(nc, nc))
    _, comp = connected_components(g, directed=False)
    return {"cluster": comp[cell].astype(np.int64), "pairs": (ui, uj, ud), "links": links.reset_index(drop=True)}


def dedupe_table(t: pa.Table, radius: int, min_shared: int, within_video: str = "drop") -> tuple[pd.DataFrame, dict]:
    """Rows sorted by (video_id, frame_index) with cluster, kept, reason; and the evidence for the report."""
    df = t.to_pandas().sort_values(["video_id", "frame_index"], kind="stable").reset_index(drop=True)
    vcode, videos = pd.factorize(df.video_id, sort=True)
    pcode, _ = pd.factorize(df.pixel_hash, sort=True)  # -1 for null
    ok = df.phash.notna().to_numpy()
    hashes = df.phash.fillna(0).astype(np.int64).to_numpy()
    res = cluster(vcode[ok], hashes[ok], pcode[ok], radius, min_shared) if ok.any() else \
        {"cluster": np.zeros(0, np.int64), "pairs": (np.zeros(0),) * 3, "links": pd.DataFrame(
            columns=["u", "v", "shared_u", "shared_v", "min_distance", "exact", "linked"])}
    comp = np.full(len(df), -1, np.int64)
    comp[ok] = res["cluster"]
    # cluster ids in order of first appearance (rows are sorted): independent of worker order
    first = pd.Series(np.arange(len(df)))[ok].groupby(comp[ok]).min()
    rank = pd.Series(np.arange(len(first)), index=first.sort_values().index)
    df["cluster"] = pd.array([rank[c] if c >= 0 else None for c in comp], dtype="Int64") if len(df) else \
        pd.array([], dtype="Int64")
    c = df[ok]
    size = c.groupby("cluster").size()
    nvid = c.groupby("cluster").video_id.nunique()
    nsrc = c.groupby("cluster").source.nunique()
    df["cluster_size"] = df.cluster.map(size).astype("Int64")
    df["cluster_videos"] = df.cluster.map(nvid).astype("Int64")
    df["cluster_sources"] = df.cluster.map(nsrc).astype("Int64")
    first_in_video = ~df.duplicated(["cluster", "video_id"]) & ok
    exact_dup = df.duplicated(["video_id", "pixel_hash"]) & ok
    df["kept"] = first_in_video | (~exact_dup & ok) if within_video == "keep" else first_in_video
    reason = np.where(df.cluster_size.fillna(1).to_numpy() == 1, "unique", "representative").astype(object)
    reason[(df.cluster_videos.fillna(1) > 1).to_numpy()] = "cross_video"
    reason[(df.cluster_sources.fillna(1) > 1).to_numpy()] = "cross_source"
    reason[~first_in_video.to_numpy()] = "near_duplicate_kept" if within_video == "keep" else "near_duplicate"
    reason[(exact_dup & ~first_in_video).to_numpy()] = "exact_duplicate"
    reason[~ok] = "undecodable"
    df["reason"] = reason
    links = res["links"].copy()
    if len(links):
        links["video_a"] = videos[links.u.to_numpy()]
        links["video_b"] = videos[links.v.to_numpy()]
    return df, {"links": links, "pairs": res["pairs"], "videos": videos}


# --- groups joined by duplicates ------------------------------------------------------------------
def join_groups(group_of: dict[str, str], dd: pd.DataFrame, mode: str = "near") -> tuple[dict[str, str], list[dict]]:
    """Manifest group -> joined group, and the clusters that joined different manifest groups.

    `group_of`: video_id -> manifest group (every video that takes part). `dd`: dedupe rows (video_id,
    cluster, cluster_videos; pixel_hash for "exact"). near: every cross-video cluster joins the groups
    of its videos; exact: only crops with the same decoded pixels join; none: nothing is joined.
    A joined group is named after its smallest manifest group, so the order of joins does not matter.
    """
    from ..sources.base import UnionFind

    if mode not in JOIN_MODES:
        raise UserError(f"--join-duplicates must be one of {', '.join(JOIN_MODES)}; got {mode!r}")
    uf = UnionFind()
    for g in dict.fromkeys(group_of.values()):
        uf.find(g)
    joins = []
    if mode == "near":
        cross = dd[dd.cluster_videos.fillna(1) > 1]
        for cid, vids in cross.groupby("cluster").video_id:
            gs = sorted({group_of[v] for v in vids.unique() if v in group_of})
            for g in gs[1:]:
                uf.union(gs[0], g)
            if len(gs) > 1:
                joins.append({"cluster": int(cid), "groups": gs, "videos": sorted(vids.unique().tolist())[:20]})
    elif mode == "exact":
        rows = dd[dd.pixel_hash.notna() & dd.video_id.isin(list(group_of))]
        shared = rows[rows.groupby("pixel_hash").video_id.transform("nunique") > 1]
        by_cluster: dict[int, tuple[set, set]] = {}
        for _, sub in shared.groupby("pixel_hash"):
            gs = sorted({group_of[v] for v in sub.video_id.unique()})
            for g in gs[1:]:
                uf.union(gs[0], g)
            cid = int(sub.cluster.iloc[0]) if sub.cluster.notna().any() else -1
            groups, videos = by_cluster.setdefault(cid, (set(), set()))
            groups.update(gs)
            videos.update(sub.video_id.unique().tolist())
        for cid in sorted(by_cluster):
            groups, videos = by_cluster[cid]
            if len(groups) > 1:
                joins.append({"cluster": cid, "groups": sorted(groups), "videos": sorted(videos)[:20]})
    return {g: uf.find(g) for g in dict.fromkeys(group_of.values())}, joins


def group_summary(frames: pd.DataFrame, joins: list[dict], top: int = 10, limit: int = 200) -> dict:
    """Sizes of the groups after joining, and each group holding > FLAG_SHARE of a source's frames.

    `frames`: one row per video taking part: video_id, source, group (joined), manifest_group, frames
    (kept crops). `joins`: join_groups' clusters, for the worst cluster of each joined group.
    """
    f = frames[frames.frames > 0]
    if not len(f):
        return {"groups": 0}
    total = int(f.frames.sum())
    per_source = f.groupby("source").frames.sum()
    g = f.groupby("group").agg(manifest_groups=("manifest_group", "nunique"), videos=("video_id", "size"),
                               frames=("frames", "sum"))
    held = f.groupby(["group", "source"]).frames.sum()
    share = held / per_source.reindex(held.index.get_level_values("source")).to_numpy()
    root = dict(zip(f.manifest_group, f.group))
    worst: dict[str, dict] = {}
    for j in joins:  # the cluster that joined the most manifest groups, per joined group
        r = root.get(j["groups"][0])
        if r is not None and len(j["groups"]) > len(worst.get(r, {}).get("groups", [])):
            worst[r] = j

    def entry(name: str) -> dict:
        row = g.loc[name]
        out = {"group": name, "manifest_groups": int(row.manifest_groups), "videos": int(row.videos),
               "frames": int(row.frames), "share": round(100 * int(row.frames) / total, 1),
               "source_share": {s: round(100 * float(v), 1) for s, v in share.loc[name].items()}}
        if name in worst:
            j = worst[name]
            out["worst_cluster"] = {"cluster": j["cluster"], "manifest_groups": len(j["groups"]),
                                    "videos": j["videos"][:5]}
        return out

    order = g.sort_values(["frames", "manifest_groups"], ascending=False, kind="stable").index
    flagged = [{"group": name, "source": source, "share": round(100 * float(v), 1),
                "frames": int(held[name, source]), "source_frames": int(per_source[source]),
                "manifest_groups": int(g.manifest_groups[name])}
               for (name, source), v in share.sort_values(ascending=False, kind="stable").items()
               if v > FLAG_SHARE]
    sizes = g.frames.to_numpy()
    return {
        "groups": int(len(g)), "manifest_groups": int(f.manifest_group.nunique()),
        "joined_groups": int((g.manifest_groups > 1).sum()),
        "groups_by_manifest_groups": {str(k): int(v) for k, v in sorted(Counter(g.manifest_groups).items())},
        "frames_per_group": {"min": int(sizes.min()), "median": float(np.median(sizes)),
                             "p90": float(np.percentile(sizes, 90)), "max": int(sizes.max())},
        "largest": [entry(n) for n in order[:top]],
        "joined": [entry(n) for n in order if g.manifest_groups[n] > 1][:limit],
        "flag_share": round(100 * FLAG_SHARE),
        "flagged": flagged[:limit], "flagged_count": len(flagged),
        "flagged_joined": sum(1 for x in flagged if x["manifest_groups"] > 1),
    }


def _video_frames(df: pd.DataFrame) -> pd.DataFrame:
    """One row per video of the dedupe table: video_id, source, manifest group, kept frames."""
    v = df.groupby("video_id", sort=True).agg(source=("source", "first"), manifest_group=("group", "first"),
                                              frames=("kept", "sum")).reset_index()
    v["manifest_group"] = v.manifest_group.fillna("video:" + v.video_id)
    v["frames"] = v.frames.astype(np.int64)
    return v


def print_groups(summary: dict, mode: str, limit: int = 5) -> None:
    """The group-size lines of the dedupe and split reports."""
    if not summary.get("groups"):
        return
    fp = summary["frames_per_group"]
    print(f"  groups after joining ({mode}): {summary['groups']} from {summary['manifest_groups']} manifest "
          f"group(s), {summary['joined_groups']} joined; groups by manifest groups joined: "
          + ", ".join(f"{k}: {v}" for k, v in summary["groups_by_manifest_groups"].items())
          + f"; kept frames per group min {fp['min']}, median {fp['median']:g}, p90 {fp['p90']:g}, max {fp['max']}")
    joined = [x for x in summary["flagged"] if x["manifest_groups"] > 1]
    for x in joined[:limit]:
        print(f"  warning: group {x['group']}, joined from {x['manifest_groups']} manifest groups, holds "
              f"{x['share']:g}% of {x['source']}'s kept frames (> {summary['flag_share']}%)")
    if len(joined) > limit:
        print(f"  ... and {len(joined) - limit} more joined group(s) over {summary['flag_share']}%")
    plain = summary["flagged_count"] - len(joined)
    if plain:
        print(f"  {plain} unjoined manifest group(s) hold > {summary['flag_share']}% of a source's kept frames "
              "(coarse identities, pairs or families; listed in the report)")


# --- the stage ----------------------------------------------------------------------------------
def _identify(work: Work, params: dict) -> tuple[dict, dict]:
    return _stage_params(params), {}


def _plan(run: StageRun) -> list[Unit]:
    """Chunks of CHUNK faces parts, in the faces index's order."""
    files = face_files(run.work)
    return [Unit(f"faces-{i // CHUNK:06d}", (run.work.root, files[i:i + CHUNK])) for i in range(0, len(files), CHUNK)]


def _combine(run: StageRun) -> Output:
    """Cluster every crop's hashes: dedupe.parquet, its report and the figure of the largest clusters."""
    params = run.params
    table = run.parts.table()
    if table is None:
        table = _empty_unit()
    df, evidence = dedupe_table(table, params["radius"], params["min_shared"], params["within_video"])
    report = build_report(df, evidence, params)
    wrote_figure = _figure(run.work, df, report)
    report["figure"] = FIGURE if wrote_figure else None
    counts = {"crops": len(df), "kept": int(df.kept.sum()), "clusters": report["clusters"]["multi"],
              "cross_video_clusters": report["clusters"]["cross_video"], **run.parts.summary}
    return Output(report=report, counts=counts, table=pa.Table.from_pandas(df, preserve_index=False),
                  files=[FIGURE] if wrote_figure else [])


def run(work: Work, params: dict | None = None, *, workers: int = 1, executor=None) -> dict:
    """Fingerprint every face crop, cluster duplicates, write dedupe.parquet and its report."""
    return run_stage(work, STAGE, params, workers=workers, executor=executor)


def read(work: Work, columns: list[str] | None = None) -> pa.Table:
    return work.read_table(OUTPUT, columns, missing=f"no {OUTPUT} in {work.root}: run `mesodata build` first "
                           "(stage 'dedupe' is missing)")


# --- report -------------------------------------------------------------------------------------
def build_report(df: pd.DataFrame, evidence: dict, params: dict, top: int = 10, limit: int = 200) -> dict:
    ok = df[df.reason != "undecodable"]
    multi = ok[ok.cluster_size > 1]
    per = multi.groupby("cluster").agg(size=("video_id", "size"), videos=("video_id", "nunique"),
                                       sources=("source", "nunique"))
    largest = per.sort_values(["size", "videos"], ascending=False, kind="stable").head(top)
    big = []
    for cid, r in largest.iterrows():
        members = multi[multi.cluster == cid]
        big.append({"cluster": int(cid), "crops": int(r["size"]), "videos": int(r["videos"]),
                    "sources": sorted(members.source.dropna().unique().tolist()),
                    "examples": members.head(8)[["video_id", "frame_index"]].to_dict("records")})
    links = evidence["links"]
    src = df.drop_duplicates("video_id").set_index("video_id").source
    pairs_out, weak = [], []
    if len(links):
        links = links.assign(source_a=links.video_a.map(src), source_b=links.video_b.map(src))
        for r in links.sort_values(["video_a", "video_b"]).itertuples():
            entry = {"video_a": r.video_a, "video_b": r.video_b, "source_a": r.source_a, "source_b": r.source_b,
                     "shared_a": int(r.shared_u), "shared_b": int(r.shared_v),
                     "min_distance": int(r.min_distance), "exact": bool(r.exact)}
            (pairs_out if r.linked else weak).append(entry)
    cross_source = [p for p in pairs_out if p["source_a"] != p["source_b"]]
    d = evidence["pairs"][2]
    return {
        "params": params,
        "crops": int(len(df)), "videos": int(df.video_id.nunique()),
        "kept": int(df.kept.sum()),
        "reasons": {k: int(v) for k, v in sorted(Counter(df.reason).items())},
        "clusters": {"multi": int(len(per)), "cross_video": int((per.videos > 1).sum()),
                     "cross_source": int((per.sources > 1).sum()),
                     "largest_crops": int(per["size"].max()) if len(per) else 0},
        "largest": big,
        "near_pair_distances": np.bincount(np.asarray(d, np.int64), minlength=params["radius"] + 1).tolist()
        if len(d) else [],
        "linked_video_pairs": len(pairs_out),
        "cross_source_pairs": cross_source[:limit],
        "cross_source_pair_count": len(cross_source),
        "cross_video_pairs": pairs_out[:limit],
        "weak_matches": weak[:limit], "weak_match_count": len(weak),
        "undecodable": df[df.reason == "undecodable"][["video_id", "frame_index", "error"]].head(limit)
        .to_dict("records"),
        "groups_after_joining": _joined_summary(df),
    }


def _joined_summary(df: pd.DataFrame) -> dict:
    """group_summary of the manifest groups as the split's default (near) joins them."""
    v = _video_frames(df)
    gmap, joins = join_groups(dict(zip(v.video_id, v.manifest_group)), df, "near")
    v["group"] = v.manifest_group.map(gmap)
    return group_summary(v, joins)


def print_report(report: dict, limit: int = 10) -> None:
    from ..report import print_table

    c = report["clusters"]
    print(f"\nDedupe (radius {report['params']['radius']}, cross-video links need "
          f"{report['params']['min_shared']} shared crops or an exact copy): {report['crops']} crops of "
          f"{report['videos']} videos, {report['kept']} kept")
    print("  reasons: " + ", ".join(f"{k} {v}" for k, v in report["reasons"].items()))
    print(f"  clusters: {c['multi']} with >1 crop, {c['cross_video']} across videos, "
          f"{c['cross_source']} across sources; largest {c['largest_crops']} crops")
    if report["largest"]:
        print_table("Largest duplicate clusters", [
            {**b, "sources": ",".join(b["sources"]),
             "e.g.": ", ".join(f"{e['video_id']}#{e['frame_index']}" for e in b["examples"][:2])}
            for b in report["largest"][:limit]], ["cluster", "crops", "videos", "sources", "e.g."])
    if report["cross_source_pairs"]:
        print_table(f"Cross-source duplicate videos ({report['cross_source_pair_count']})",
                    report["cross_source_pairs"][:limit],
                    ["video_a", "video_b", "shared_a", "shared_b", "min_distance", "exact"])
    if "groups_after_joining" in report:
        print_groups(report["groups_after_joining"], "near, as the split joins them by default")
    if report["weak_match_count"]:
        print(f"  {report['weak_match_count']} weak cross-video match(es) below the evidence threshold "
              f"(not merged; listed in {REPORT})")


def _figure(work: Work, df: pd.DataFrame, report: dict, per_cluster: int = 8) -> bool:
    """Thumbnails of the largest clusters -> reports/dedupe-clusters.png; False when there are none."""
    clusters = report["largest"][:6]
    if not clusters:
        return False
    from .. import plots

    wanted = {(e["video_id"], e["frame_index"]) for b in clusters for e in b["examples"][:per_cluster]}
    files = df[[(v, f) in wanted for v, f in zip(df.video_id, df.frame_index)]].faces_part.dropna().unique() \
        if "faces_part" in df else []
    images = {}
    for rel in files:
        if not rel:
            continue
        t = storage.read_table(work.path(rel), columns=["video_id", "frame_index", "image"])
        for vid, fi, img in zip(*(t.column(c).to_pylist() for c in ("video_id", "frame_index", "image"))):
            if (vid, fi) in wanted and img and img.get("bytes"):
                images[vid, fi] = img["bytes"]
    decoded = {k: cells.decode(v) for k, v in images.items()}
    fig = plots.duplicate_clusters(clusters, decoded, report["params"]["radius"], per_cluster)
    atomic.write_bytes(work.path(FIGURE), plots.png_bytes(fig))
    return True


STAGE = StageDef(NAME, VERSION, upstream=("faces",), check=_check_params, identify=_identify, plan=_plan,
                 unit=_hash_unit, combine=_combine, artifact=OUTPUT, print_report=print_report)
