"""Stage 4: a leak-free, stratified train/val/test split of whole groups, and its leakage audit.

Split units are groups: the manifest's `group` (pairs, identities, families, YouTube ids) joined with
every cross-video duplicate cluster from dedupe, so the same clip in two datasets lands in one split.
Only videos with manifest status ok and at least one kept face crop take part; every other video
keeps a row with split null and the reason.

protocol "default": groups are assigned greedily, largest first (ties in a seeded order), each to
the split that brings every stratum's (source x label x method) share of kept frames closest to the
ratios; then single-group moves are made while they lower that distance. Same seed and inputs give a
byte-identical split.parquet; another seed gives another valid split.

protocol "official": each video takes its source's official split (FF++ split files, Celeb-DF's test
list, DFDC's `set`); where a source has no val, val is carved from its train by groups; videos with
no official split count as train. Groups that then sit in two splits are reported as leaks, not
hidden or fixed.

join_duplicates: "near" (default) joins groups through every cross-video duplicate cluster; "exact"
only through byte/pixel-identical crops; "none" joins nothing. Duplicate clusters that then cross
splits are reported as leaks in reports/split.json.

A split the groups cannot make is refused (UserError, nothing written): a split with a share > 0
that gets no rows, or, under the default protocol, a source with kept frames that gets none in val
or test. The message gives the largest group's share of the frames, how many manifest groups the
duplicate clusters joined into it (and the cluster that joined the most), and the remedies.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa

from ..errors import UserError
from ..runner import Output, Param, StageDef, StageRun, Work, check_params, run_stage

log = logging.getLogger("mesodata")

NAME = "split"
VERSION = "1.1"
OUTPUT = "split.parquet"
REPORT = "reports/split.json"
SPLITS = ("train", "val", "test")
PROTOCOLS = ("default", "official")
JOIN_MODES = ("near", "exact", "none")
DEFAULT_RATIOS = (70, 20, 10)
MOVE_PASSES = 4

__all__ = ["STAGE", "run", "read", "parse_ratios", "assign_groups", "merged_groups", "SPLITS", "PROTOCOLS"]


def parse_ratios(text: str | tuple | list) -> tuple[float, float, float]:
    """'70,20,10' -> (70.0, 20.0, 10.0): three numbers >= 0 for train, val, test summing to 100."""
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    try:
        vals = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise UserError(f"--ratios must be three numbers train,val,test such as 70,20,10; got {text!r}") from None
    if len(vals) != 3:
        raise UserError(f"--ratios must be three numbers train,val,test such as 70,20,10; got {text!r}")
    if any(not np.isfinite(v) or v < 0 for v in vals):
        raise UserError(f"--ratios must be numbers >= 0; got {text!r}")
    if abs(sum(vals) - 100) > 1e-6:
        raise UserError(f"--ratios must sum to 100; {text!r} sums to {sum(vals):g}")
    return vals


PARAMS = {"seed": Param(0, int, 0), "ratios": Param(DEFAULT_RATIOS), "protocol": Param("default", choices=PROTOCOLS),
          "join_duplicates": Param("near", choices=JOIN_MODES)}


def _check(params: dict) -> dict:
    p = check_params(NAME, PARAMS, params)
    p["ratios"] = list(parse_ratios(p["ratios"]))
    if p["join_duplicates"] == "near":  # only when not the default, so existing work dirs keep their fingerprint
        del p["join_duplicates"]
    return p


# --- groups -------------------------------------------------------------------------------------
def merged_groups(videos: pd.DataFrame, dedupe: pd.DataFrame, mode: str = "near") -> tuple[dict[str, str], list[dict]]:
    """Manifest group -> leak-free group (joined through cross-video duplicate clusters: every one for
    "near", byte/pixel-identical crops only for "exact", none for "none"), and the clusters that
    joined different manifest groups."""
    from .dedupe import join_groups

    return join_groups(dict(zip(videos.video_id, videos.group)), dedupe, mode)


# --- assignment ---------------------------------------------------------------------------------
def assign_groups(counts: np.ndarray, ratios: np.ndarray, seed: int, fixed: np.ndarray | None = None) -> np.ndarray:
    """Split index for each group, given its frames per stratum `counts` (groups x strata).

    Greedy, largest group first (equal sizes in a seeded order), each to the split that most lowers
    sum over strata and splits of (share - ratio)^2; then single-group moves while they lower it.
    `fixed`: split index per group, or -1 for free (fixed groups count but never move).
    """
    n, k = counts.shape
    ratios = np.asarray(ratios, float) / np.sum(ratios)
    totals = counts.sum(axis=0).astype(float)
    totals[totals == 0] = 1.0
    frac = counts / totals  # each group's share of each stratum
    rng = np.random.default_rng(seed)
    fixed = np.full(n, -1) if fixed is None else np.asarray(fixed)
    assign = fixed.copy()
    x = np.zeros((k, len(ratios)))  # share of each stratum held by each split
    for g in np.flatnonzero(fixed >= 0):
        x[:, fixed[g]] += frac[g]
    free = np.flatnonzero(fixed < 0)
    tie = rng.permutation(len(free))
    order = free[np.lexsort((tie, -counts[free].sum(axis=1)))]
    allowed = np.flatnonzero(ratios > 0)
    for g in order:
        d = frac[g][:, None]
        delta = (d * (2 * (x - ratios) + d)).sum(axis=0)  # cost change of adding g to each split
        best = allowed[np.argmin(delta[allowed] + 1e-12 * rng.random(len(allowed)))]
        assign[g] = best
        x[:, best] += frac[g]
    for _ in range(MOVE_PASSES):
        moved = False
        for g in order:
            s = assign[g]
            d = frac[g]
            gain_out = (d * (2 * (x[:, s] - ratios[s]) - d)).sum()  # cost change of removing g from s
            delta = (d[:, None] * (2 * (x - ratios) + d[:, None])).sum(axis=0)
            delta[s] = np.inf
            t = allowed[np.argmin(delta[allowed])]
            if delta[t] - gain_out < -1e-12:
                x[:, s] -= d
                x[:, t] += d
                assign[g] = t
                moved = True
        if not moved:
            break
    return assign


# --- the stage ----------------------------------------------------------------------------------
def _combine(run: StageRun) -> Output:
    """Assign every eligible video a split (no units: one global step); the table and its audit."""
    from . import dedupe as dedupe_stage
    from . import manifest

    work, p = run.work, run.params
    man = manifest.read(work).select(["video_id", "source", "label", "method", "group", "status",
                                      "official_split"]).to_pandas()
    dd = dedupe_stage.read(work, columns=["video_id", "frame_index", "source", "cluster", "cluster_videos",
                                          "kept"] + (["pixel_hash"] if p.get("join_duplicates") == "exact"
                                                     else [])).to_pandas()
    table, report = split_videos(man, dd, p)
    counts = {"videos": int(len(table)), **{s: int((table.split == s).sum()) for s in SPLITS},
              "unassigned": int(table.split.isna().sum()), "group_leaks": report["audit"]["groups_crossing"]}
    if "join_duplicates" in p:  # exact or none: the duplicates left crossing splits
        counts["duplicate_leaks"] = report["audit"]["duplicate_clusters_crossing"]
    return Output(report=report, counts=counts, table=pa.Table.from_pandas(table, preserve_index=False))


def run(work: Work, params: dict | None = None) -> dict:
    """Assign every eligible video a split; write split.parquet and the leakage audit."""
    return run_stage(work, STAGE, params)


def split_videos(man: pd.DataFrame, dd: pd.DataFrame, p: dict) -> tuple[pd.DataFrame, dict]:
    man = man.sort_values("video_id", kind="stable").reset_index(drop=True)
    kept = dd[dd.kept].groupby("video_id").size()
    man["frames"] = man.video_id.map(kept).fillna(0).astype(np.int64)
    reason = np.where(man.status != "ok", "status " + man.status.astype(str),
                      np.where(man.frames == 0, "no kept face", None))
    man["reason"] = reason
    eligible = man.reason.isna().to_numpy()
    join = p.get("join_duplicates", "near")
    gmap, joins = merged_groups(man, dd, join)
    man["manifest_group"] = man["group"]
    man["group"] = man.manifest_group.map(gmap)
    man["stratum"] = man.source + "|" + man.label.astype("Int64").astype(str) + "|" + man.method.fillna("")
    man["split"] = None
    el = man[eligible]
    ratios = np.array(p["ratios"], float)
    notes: list[str] = []
    if p["protocol"] == "default":
        groups = sorted(el.group.unique())
        if len(groups):
            counts = _counts(el, groups)
            fixed = _no_empty_split(el, groups, ratios, p["seed"])
            assign = assign_groups(counts.to_numpy(), ratios, p["seed"], fixed)
            man.loc[eligible, "split"] = el.group.map(dict(zip(groups, [SPLITS[a] for a in assign]))).to_numpy()
    else:
        man.loc[eligible, "split"] = _official(el, ratios, p["seed"], notes)
    _refuse_impossible(man, dd, p, gmap, joins)
    report = audit(man, dd, p, joins, notes)
    cols = ["video_id", "source", "label", "method", "group", "manifest_group", "split", "reason", "frames",
            "official_split"]
    return man[cols], report


def _refuse_impossible(man: pd.DataFrame, dd: pd.DataFrame, p: dict, gmap: dict[str, str],
                       joins: list[dict]) -> None:
    """UserError when the split leaves a split with a share > 0 empty, or (default protocol) a source
    with kept frames without val or test rows: a benchmark that cannot be trained or evaluated."""
    a = man[man.split.notna()]
    if not len(a):
        return  # nothing eligible: the audit says why every video is out
    wanted = [s for s, r in zip(SPLITS, p["ratios"]) if r > 0]
    problems = [f"{s} gets no rows" for s in wanted if not (a.split == s).any()]
    bad_sources, by_missing = [], {}
    if p["protocol"] == "default":
        for source, sub in a.groupby("source"):
            missing = tuple(s for s in wanted if s != "train" and not (sub.split == s).any())
            if missing:
                bad_sources.append(source)
                by_missing.setdefault(missing, []).append(source)
    for missing, sources in by_missing.items():
        problems.append(f"source{'s' if len(sources) > 1 else ''} {', '.join(sources)} "
                        f"get{'' if len(sources) > 1 else 's'} no rows in {' or '.join(missing)}")
    if not problems:
        return
    sizes = a.groupby("group").frames.sum().sort_values(ascending=False, kind="stable")
    biggest = sizes.index[0]
    members = a[a.group == biggest]
    per_source = a.groupby("source").frames.sum()
    shares = ", ".join(f"{s} {100 * members.frames[members.source == s].sum() / per_source[s]:.0f}%"
                       for s in sorted(members.source.unique()))
    n_manifest = members.manifest_group.nunique()
    text = (f"split impossible with ratios {':'.join(f'{r:g}' for r in p['ratios'])}: {'; '.join(problems)}. "
            f"The largest group, {biggest}, holds {100 * sizes.iloc[0] / sizes.sum():.0f}% of the kept frames "
            f"({shares}); ")
    mine = [j for j in joins if gmap[j["groups"][0]] == biggest]
    if n_manifest > 1 and mine:
        worst = max(mine, key=lambda j: (len(j["groups"]), -j["cluster"]))
        crops = dd[dd.cluster == worst["cluster"]]
        text += (f"duplicate clusters joined {n_manifest} manifest groups into it (worst: cluster "
                 f"{worst['cluster']}, {len(crops)} crops in {crops.video_id.nunique()} videos, joined "
                 f"{len(worst['groups'])} manifest groups, e.g. {', '.join(worst['videos'][:2])}). ")
    else:
        text += "duplicate clusters joined no other manifest group into it. "
    for source in bad_sources:
        own = a[a.source == source].groupby("group").frames.sum()
        if source not in members.source.values or len(own) > 1:
            text += (f"{source} has {len(own)} group(s), the largest with "
                     f"{100 * own.max() / own.sum():.0f}% of its kept frames. ")
    join = p.get("join_duplicates", "near")
    remedies = []
    if join == "near":
        remedies.append("--join-duplicates exact (join groups only through byte/pixel-identical crops)")
    if join != "none":
        remedies.append("--join-duplicates none (join nothing; duplicates crossing splits are reported as "
                        "leaks in reports/split.json)")
    if p["protocol"] == "default":
        remedies.append("--protocol official (each source's own split)")
    else:
        remedies.append("--protocol default")
    remedies.append("other --ratios, or more videos and identities")
    raise UserError(text + "Remedies: " + "; ".join(remedies) + ". Nothing was written.")


def _no_empty_split(el: pd.DataFrame, groups: list[str], ratios: np.ndarray, seed: int) -> np.ndarray:
    """Pin one small group of each source to each smaller split, where the source has enough groups.

    Minimising squared share errors alone leaves a 10% split empty whenever every group is larger
    than 10% of its stratum (small datasets, Celeb-DF's identities); an empty test set measures
    nothing, so each source with as many single-source groups as splits gives one to each.
    """
    fixed = np.full(len(groups), -1)
    index = {g: i for i, g in enumerate(groups)}
    sizes = el.groupby("group").frames.sum()
    sources = el.groupby("group").source.nunique()
    rng = np.random.default_rng(seed)
    targets = [i for i in np.argsort(ratios, kind="stable") if ratios[i] > 0][:-1]  # all but the largest
    for source in sorted(el.source.unique()):
        own = sorted(g for g in el.group[el.source == source].unique() if sources[g] == 1)
        if len(own) <= len(targets):
            continue
        tie = rng.random(len(own))
        for t, g in zip(targets, [own[i] for i in np.lexsort((tie, [sizes[g] for g in own]))]):
            fixed[index[g]] = t
    return fixed


def _counts(el: pd.DataFrame, groups: list[str]) -> pd.DataFrame:
    return (el.pivot_table(index="group", columns="stratum", values="frames", aggfunc="sum", fill_value=0)
            .reindex(groups).fillna(0).sort_index(axis=1))


def _official(el: pd.DataFrame, ratios: np.ndarray, seed: int, notes: list[str]) -> np.ndarray:
    """Official split per eligible video; val carved from train by groups where a source has none."""
    split = el.official_split.where(el.official_split.isin(SPLITS), None).to_numpy(object)
    missing = pd.isna(split)
    if missing.any():
        for s, n in Counter(el.source[missing]).items():
            notes.append(f"{s}: {n} video(s) without an official split count as train")
        split[missing] = "train"
    src = el.source.to_numpy()
    for s in sorted(el.source.unique()):
        mine = src == s
        if (split[mine] == "val").any() or ratios[1] == 0:
            continue
        train = mine & (split == "train")
        if not train.any():
            continue
        sub = el[train]
        groups = sorted(sub.group.unique())
        if len(groups) < 2:
            notes.append(f"{s}: no official val and a single train group: no val carved")
            continue
        counts = _counts(sub, groups)
        assign = assign_groups(counts.to_numpy(), np.array([ratios[0], ratios[1]]), seed)
        chosen = dict(zip(groups, ["train" if a == 0 else "val" for a in assign]))
        split[train] = sub.group.map(chosen).to_numpy()
        notes.append(f"{s}: no official val; carved {sum(a == 1 for a in assign)} of {len(groups)} train "
                     f"group(s) into val ({ratios[1]:g}/{ratios[0] + ratios[1]:g} of train's frames)")
    return split


# --- audit --------------------------------------------------------------------------------------
def audit(man: pd.DataFrame, dd: pd.DataFrame, p: dict, joins: list[dict], notes: list[str]) -> dict:
    a = man[man.split.notna()]
    ratios = np.array(p["ratios"], float) / 100.0

    def crossing(key: str) -> list[dict]:
        out = []
        for g, sub in a.groupby(key):
            splits = sorted(sub.split.unique(), key=SPLITS.index)
            if len(splits) > 1:
                out.append({"group": g, "splits": splits, "sources": sorted(sub.source.unique()),
                            "videos": {s: sorted(sub.video_id[sub.split == s])[:10] for s in splits}})
        return out

    leaks = crossing("group")
    manifest_leaks = crossing("manifest_group")
    split_of = dict(zip(a.video_id, a.split))
    dup = []
    cross = dd[(dd.cluster_videos.fillna(1) > 1) & dd.video_id.isin(split_of)]
    for cid, sub in cross.groupby("cluster"):
        splits = sorted({split_of[v] for v in sub.video_id}, key=SPLITS.index)
        if len(splits) > 1:
            dup.append({"cluster": int(cid), "splits": splits, "videos": sorted(sub.video_id.unique())[:10]})
    strata = []
    for st, sub in a.groupby("stratum"):
        total = int(sub.frames.sum())
        row = {"stratum": st, "frames": total, "groups": int(sub.group.nunique())}
        dev = 0.0
        for s, r in zip(SPLITS, ratios):
            share = float(sub.frames[sub.split == s].sum()) / total if total else 0.0
            row[s] = round(share * 100, 1)
            dev = max(dev, abs(share - r))
        row["max_deviation"] = round(dev * 100, 1)
        strata.append(row)

    def table(by_source: bool) -> list[dict]:
        rows = []
        keys = ["source", "split"] if by_source else ["split"]
        for k, sub in a.groupby(keys):
            k = k if isinstance(k, tuple) else (k,)
            rows.append({**dict(zip(keys, k)),
                         "forged_videos": int((sub.label == 1).sum()), "real_videos": int((sub.label == 0).sum()),
                         "total_videos": int(len(sub)),
                         "forged_frames": int(sub.frames[sub.label == 1].sum()),
                         "real_frames": int(sub.frames[sub.label == 0].sum()), "total_frames": int(sub.frames.sum())})
        order = {s: i for i, s in enumerate(SPLITS)}
        return sorted(rows, key=lambda r: (r.get("source", ""), order.get(r["split"], 9)))

    unassigned = man[man.split.isna()]
    from .dedupe import group_summary

    return {
        "params": p,
        "videos": int(len(man)), "assigned": int(len(a)), "unassigned": int(len(unassigned)),
        "unassigned_reasons": {k: int(v) for k, v in sorted(Counter(unassigned.reason).items())},
        "unassigned_videos": unassigned[["video_id", "reason"]].head(200).to_dict("records"),
        "groups": int(a.group.nunique()), "manifest_groups": int(a.manifest_group.nunique()),
        "duplicate_joins": joins[:200], "duplicate_join_count": len(joins),
        "audit": {"groups_crossing": len(leaks), "manifest_groups_crossing": len(manifest_leaks),
                  "duplicate_clusters_crossing": len(dup)},
        "leaks": {"groups": leaks[:500], "manifest_groups": manifest_leaks[:500], "duplicate_clusters": dup[:500]},
        "strata": strata,
        "max_stratum_deviation": max((s["max_deviation"] for s in strata), default=0.0),
        "table": table(False), "table_by_source": table(True),
        "notes": notes,
        "join_duplicates": p.get("join_duplicates", "near"),
        "groups_after_joining": group_summary(a[["video_id", "source", "group", "manifest_group", "frames"]],
                                              [j for j in joins if set(j["groups"]) & set(a.manifest_group)]),
    }


def print_report(report: dict, limit: int = 10) -> None:
    from ..report import print_first, print_table

    p = report["params"]
    cols = ["forged_videos", "real_videos", "total_videos", "forged_frames", "real_frames", "total_frames"]
    print_table(f"Split ({p['protocol']} protocol, seed {p['seed']}, ratios "
                f"{':'.join(f'{r:g}' for r in p['ratios'])}): videos and kept frames per split",
                report["table"], ["split", *cols])
    print_table("Per source", report["table_by_source"], ["source", "split", *cols])
    print_table("Strata: % of kept frames per split (target "
                + "/".join(f"{r:g}" for r in p["ratios"]) + ")", report["strata"],
                ["stratum", "frames", "groups", *SPLITS, "max_deviation"])
    au = report["audit"]
    print(f"\nLeakage audit: {au['groups_crossing']} group(s) crossing splits "
          f"({au['manifest_groups_crossing']} manifest group(s)), {au['duplicate_clusters_crossing']} "
          f"duplicate cluster(s) crossing splits; {report['duplicate_join_count']} duplicate cluster(s) "
          f"joined manifest groups")
    print_first([f"leak: group {leak['group']} in {', '.join(leak['splits'])}: "
                 + "; ".join(f"{s}: {', '.join(v[:3])}" for s, v in leak["videos"].items())
                 for leak in report["leaks"]["groups"]], limit, indent="  ", where="reports/split.json")
    if "groups_after_joining" in report:
        from .dedupe import print_groups

        print_groups(report["groups_after_joining"], report["join_duplicates"])
    if au["duplicate_clusters_crossing"] and report.get("join_duplicates", "near") != "near":
        print(f"  warning: with --join-duplicates {report['join_duplicates']}, {au['duplicate_clusters_crossing']} "
              f"duplicate cluster(s) sit in two splits: leaks, listed in {REPORT}")
    if report["unassigned"]:
        print(f"  {report['unassigned']} video(s) without a split: "
              + ", ".join(f"{k} {v}" for k, v in report["unassigned_reasons"].items()))
    for n in report["notes"]:
        print(f"  note: {n}")


def read(work: Work) -> pa.Table:
    return work.read_table(OUTPUT, missing=f"no {OUTPUT} in {work.root}: run `mesodata split` first")


STAGE = StageDef(NAME, VERSION, upstream=("manifest", "dedupe"), check=_check, combine=_combine, artifact=OUTPUT,
                 print_report=print_report)
