"""A full-size stand-in for the three releases: every file name at full counts, in the real layouts,
with the releases' resolution and length distributions; used by bench_scale.py.

    plan = combined(seed)            # FF++ c23 (every method, DFD), Celeb-DF v2, DFDC preview: 21,210 videos
    plan = dfdc_full(seed)           # DFDC's 50 train parts: 119,154 videos
    write_links(root, plan, clip)    # every name a hard link of one short real clip, metadata complete
    write_real(root, subset(plan, k), seed)   # k videos per group at the drawn size and length

Counts and name patterns follow /work/shared/DATASETS.md; FF++'s pairs are the official ones when
their split files are given. Sizes and lengths (per the releases' papers and what users report):
  FF++ YouTube ids   854x480 45 %, 1280x720 40 %, 1920x1080 15 %; 10-30 s at 25 fps; a method's
                     fake keeps its target's video, so its size and length
  DFD (actors)       1920x1080, 15-30 s, 25 fps
  Celeb-DF v2        942x500, 9-17 s (mean 13), 30 fps
  DFDC               1920x1080 (a tenth portrait, 1080x1920), 10 s, 30 fps
Real videos are rendered from the sample footage (pipeline/footage.py's faces, as
tests/fixtures/realistic.py frames them) with that fixture's manipulation for each method.
"""

from __future__ import annotations

import json
import os
import string
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FF = "FaceForensics++"
CD = "Celeb-DF-v2"
FF_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
DFD_SCENES = ("exit_phone_room", "hugging_happy", "kitchen_pan", "kitchen_still", "meeting_serious",
              "outside_talking_pan_laughing", "outside_talking_still_laughing", "podium_speech_happy",
              "secret_conversation", "talking_against_wall", "talking_angry_couch", "walk_down_hall_angry",
              "walking_and_outside_surprised", "walking_down_indoor_hall_disgust",
              "walking_down_street_outside_angry", "walking_outside_cafe_disgusted")


@dataclass
class Video:
    rel: str  # path under the data root
    group: str  # what it is, for stratified subsets and per-group figures: ff-real, ff-Deepfakes, ...
    size: tuple[int, int]  # (w, h)
    seconds: float
    fps: int
    fake: bool
    method: str = "real"
    target: str = ""  # the real clip whose video a fake keeps (its rel), for rendering

    @property
    def frames(self) -> int:
        return round(self.seconds * self.fps)


@dataclass
class Plan:
    videos: list[Video]
    metadata: dict[str, str | bytes] = field(default_factory=dict)  # rel -> file content

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.videos:
            out[v.group] = out.get(v.group, 0) + 1
        return out


def _rng(seed: int, *key) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32("/".join(map(str, key)).encode())])


def _letters(rng, n: int, alphabet: str = string.ascii_lowercase) -> str:
    return "".join(alphabet[k] for k in rng.integers(len(alphabet), size=n))


def _partner(rng, i: int, n: int, cluster: int, k: int | None = None) -> int:
    """Another member of i's cluster (members i // cluster * cluster ...): swaps are made between
    look-alike people, so identities fall into many components, not one (the split needs several)."""
    lo = i // cluster * cluster
    members = [j for j in range(lo, min(lo + cluster, n)) if j != i] or [(i + 1) % n]
    return members[(int(rng.integers(len(members))) if k is None else k) % len(members)]


# --- the layouts at full counts -----------------------------------------------------------------
def _ff_pairs(splits: Path | None) -> dict[str, list[list[str]]]:
    if splits and (splits / "train.json").exists():
        return {s: json.loads((splits / f"{s}.json").read_text()) for s in ("train", "val", "test")}
    ids = [f"{i:03d}" for i in _rng(0, "ff-ids").permutation(1000)]
    pairs = [[ids[2 * k], ids[2 * k + 1]] for k in range(500)]
    return {"train": pairs[:360], "val": pairs[360:430], "test": pairs[430:]}


def faceforensics(seed: int, splits: Path | None) -> Plan:
    rng = _rng(seed, "ff")
    sizes = ((854, 480), (1280, 720), (1920, 1080))
    split = _ff_pairs(splits)
    vids, meta = [], {}
    real: dict[str, Video] = {}
    for i in range(1000):
        ident = f"{i:03d}"
        size = sizes[rng.choice(3, p=(0.45, 0.40, 0.15))]
        real[ident] = Video(f"{FF}/original_sequences/youtube/c23/videos/{ident}.mp4", "ff-real", size,
                            float(rng.uniform(10, 30)), 25, False)
    vids += real.values()
    for method in FF_METHODS:
        for a, b in (p for ps in split.values() for p in ps):
            for t, s in ((a, b), (b, a)):
                r = real[t]
                vids.append(Video(f"{FF}/manipulated_sequences/{method}/c23/videos/{t}_{s}.mp4", f"ff-{method}",
                                  r.size, r.seconds, r.fps, True, method, r.rel))
    # DFD: 28 actors, 363 (actor, scene) reals, 3068 fakes <t>_<s>__<scene>__<id>
    dfd_real = {}
    pairs = [(a, s) for s in DFD_SCENES for a in range(1, 29)]
    for a, scene in (pairs[k] for k in rng.permutation(len(pairs))[:363]):
        v = Video(f"{FF}/original_sequences/actors/c23/videos/{a:02d}__{scene}.mp4", "dfd-real", (1920, 1080),
                  float(rng.uniform(15, 30)), 25, False)
        dfd_real[(a, scene)] = v
        vids.append(v)
    keys = sorted(dfd_real)
    for k in range(3068):
        a, scene = keys[k % len(keys)]
        s = _partner(rng, a - 1, 28, 4) + 1
        r = dfd_real[(a, scene)]
        code = _letters(rng, 8, string.ascii_uppercase + string.digits)
        vids.append(Video(f"{FF}/manipulated_sequences/DeepFakeDetection/c23/videos/{a:02d}_{s:02d}__{scene}__{code}.mp4",
                          "dfd-fake", r.size, r.seconds, r.fps, True, "DeepFakeDetection", r.rel))
    for s, ps in split.items():
        meta[f"{FF}/dataset/splits/{s}.json"] = json.dumps(ps)
    if splits and (splits / "conversion_dict.json").exists():
        meta[f"{FF}/dataset/splits/conversion_dict.json"] = (splits / "conversion_dict.json").read_text()
    return Plan(vids, meta)


def celebdf(seed: int) -> Plan:
    rng = _rng(seed, "celebdf")
    people = [p for p in range(62) if p not in (14, 15, 18)]  # 59 identities, as in the release
    vids, real = [], []

    def length() -> float:
        return float(np.clip(rng.normal(13, 2.5), 9, 17))

    for k in range(590):
        p, clip = people[k % 59], k // 59
        v = Video(f"Celeb-real/id{p}_{clip:04d}.mp4", "celeb-real", (942, 500), length(), 30, False)
        real.append(v)
    for k in range(300):
        real.append(Video(f"YouTube-real/{k:05d}.mp4", "youtube-real", (942, 500), length(), 30, False))
    vids += real
    celeb = real[:590]
    offset = rng.integers(11, size=590)  # each real's fakes cycle through their cluster from a random start
    for k in range(5639):
        r = celeb[k % 590]
        t = int(r.rel.split("/")[1].split("_")[0][2:])
        s = people[_partner(rng, people.index(t), 59, 12, offset[k % 590] + k // 590)]
        clip = r.rel.split("_")[1][:4]
        vids.append(Video(f"Celeb-synthesis/id{t}_id{s}_{clip}.mp4", "celeb-synthesis", r.size, r.seconds, 30, True,
                          "Celeb-synthesis", r.rel))
    unique = vids
    for v in unique:
        v.rel = f"{CD}/{v.rel}"
        v.target = f"{CD}/{v.target}" if v.target else ""
    listed = ([f"1 {v.rel[len(CD) + 1:]}" for v in unique if v.group == "celeb-real"][:108]
              + [f"1 {v.rel[len(CD) + 1:]}" for v in unique if v.group == "youtube-real"][:70]
              + [f"0 {v.rel[len(CD) + 1:]}" for v in unique if v.fake][:340])
    return Plan(unique, {f"{CD}/List_of_testing_videos.txt": "\n".join(listed)})


def _dfdc_size(rng) -> tuple[int, int]:
    return (1080, 1920) if rng.random() < 0.1 else (1920, 1080)


def dfdc_preview(seed: int) -> Plan:
    rng = _rng(seed, "dfdc-preview")
    root = "DFDC/dfdc_preview_set"
    actors = sorted({int(x) for x in rng.integers(100000, 999999, size=200)})[:66]
    test_actors = set(actors[-10:])
    vids, meta, reals = [], {}, []
    for k in range(1131):
        t = actors[k % 66]
        ctx = "ABCDEFGH"[(k // 66) % 8]
        rel = f"original_videos/{t}/{t}_{ctx}_{k // 528 + 1:03d}.mp4"
        v = Video(f"{root}/{rel}", "dfdc-real", _dfdc_size(rng), 10.0, 30, False)
        reals.append((t, ctx, k // 528 + 1, v))
        meta[rel] = {"label": "real", "set": "test" if t in test_actors else "train", "augmentations": [],
                     "target_id": t}
        vids.append(v)
    for k in range(4119):
        t, ctx, clip, r = reals[k % len(reals)]
        j = k // len(reals)  # a real's j-th fake: two methods, then the other look-alike
        s = actors[_partner(rng, actors.index(t), 66, 3, j // 2)]
        rel = f"method_{'AB'[j % 2]}/{t}/{t}_{ctx}/{s}_{t}_{ctx}_{clip:03d}.mp4"
        if rel in meta:
            continue
        meta[rel] = {"label": "fake", "set": "test" if t in test_actors else "train", "augmentations": [],
                     "target_id": t, "swapped_id": s}
        vids.append(Video(f"{root}/{rel}", "dfdc-fake", r.size, 10.0, 30, True, "dfdc", r.rel))
    return Plan(vids, {f"{root}/dataset.json": json.dumps(meta)})


def combined(seed: int = 0, splits: Path | None = None) -> Plan:
    """FF++ c23 with every method and DFD, Celeb-DF v2, the DFDC preview: the full combined benchmark."""
    parts = (faceforensics(seed, splits), celebdf(seed), dfdc_preview(seed))
    return Plan([v for p in parts for v in p.videos], {k: v for p in parts for k, v in p.metadata.items()})


def dfdc_full(seed: int = 0, parts: int = 50, total: int = 119_154, reals: int = 19_154) -> Plan:
    """The full DFDC release: `parts` folders of 10-letter names, each with its metadata.json."""
    rng = _rng(seed, "dfdc-full")
    vids, meta = [], {}
    per_real = (total - reals) / reals
    made = 0
    for k in range(reals):
        part = f"DFDC/dfdc_train_part_{k * parts // reals}"
        name = f"{_letters(rng, 10)}.mp4"
        r = Video(f"{part}/{name}", "dfdc-real", _dfdc_size(rng), 10.0, 30, False)
        vids.append(r)
        meta.setdefault(part, {})[name] = {"label": "REAL", "split": "train", "original": None}
        n = round((k + 1) * per_real) - made
        made += n
        for _ in range(n):
            fake = f"{_letters(rng, 10)}.mp4"
            vids.append(Video(f"{part}/{fake}", "dfdc-fake", r.size, 10.0, 30, True, "dfdc", r.rel))
            meta[part][fake] = {"label": "FAKE", "split": "train", "original": name}
    return Plan(vids, {f"{p}/metadata.json": json.dumps(m) for p, m in meta.items()})


def _family(v: Video, pair_of: dict[str, int]) -> str:
    """What must be kept together for the manifest to find nothing missing: an FF++ pair (both ids,
    every method both ways, as the split files list them); any other video alone."""
    if v.group.startswith("ff-"):
        return f"ff-pair-{pair_of[Path(v.rel).stem.split('_')[0]]}"
    return v.rel


def _pairs(plan: Plan) -> dict[str, int]:
    pairs = [p for rel, text in plan.metadata.items() if rel.endswith(("train.json", "val.json", "test.json"))
             for p in json.loads(text)]
    return {x: k for k, p in enumerate(pairs) for x in p}


def subset(plan: Plan, per_group: int, seed: int = 0) -> Plan:
    """`per_group` videos of each group drawn at random (FF++: `per_group` // 2 whole pairs, each
    2 reals and 2 fakes per method), with metadata listing only those."""
    rng = _rng(seed, "subset")
    pair_of = _pairs(plan)
    by_group: dict[str, list[str]] = {}
    for v in plan.videos:
        fam = _family(v, pair_of)
        key = "ff" if fam.startswith("ff-pair") else v.group
        if fam not in by_group.setdefault(key, []):
            by_group[key].append(fam)
    take = {k: (max(1, per_group // 2) if k == "ff" else per_group) for k in by_group}
    fams = {g[i] for k, g in by_group.items() for i in rng.permutation(len(g))[:take[k]]}
    return _keep(plan, fams, pair_of)


def thin(plan: Plan, n: int, seed: int = 0) -> Plan:
    """About `n` videos, the same mix at a smaller count: whole families drawn with probability
    n / all, with their metadata."""
    if n >= len(plan.videos):
        return plan
    rng = _rng(seed, "thin")
    pair_of = _pairs(plan)
    fams = sorted({_family(v, pair_of) for v in plan.videos})
    fams = {f for f, r in zip(fams, rng.random(len(fams))) if r < n / len(plan.videos)}
    return _keep(plan, fams, pair_of)


def _keep(plan: Plan, fams: set[str], pair_of: dict[str, int]) -> Plan:
    chosen = [v for v in plan.videos if _family(v, pair_of) in fams]
    return Plan(chosen, _prune(plan.metadata, {v.rel for v in chosen}))


def _prune(metadata: dict, keep: set[str]) -> dict:
    out = {}
    ff_ids = {Path(r).stem for r in keep if "/youtube/" in r} | {
        x for r in keep if "/manipulated_sequences/" in r and "DeepFake" not in r for x in Path(r).stem.split("_")}
    for rel, text in metadata.items():
        folder = rel.rsplit("/", 1)[0]
        if rel.endswith(("train.json", "val.json", "test.json")):
            text = json.dumps([p for p in json.loads(text) if p[0] in ff_ids and p[1] in ff_ids])
        elif rel.endswith("List_of_testing_videos.txt"):
            text = "\n".join(line for line in text.split("\n") if f"{CD}/{line.split(' ', 1)[1]}" in keep)
        elif rel.endswith(("dataset.json", "metadata.json")):
            text = json.dumps({k: v for k, v in json.loads(text).items() if f"{folder}/{k}" in keep})
        out[rel] = text
    return out


# --- writing ------------------------------------------------------------------------------------
def write_metadata(root: Path, plan: Plan) -> None:
    for rel, text in plan.metadata.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text) if isinstance(text, str) else (root / rel).write_bytes(text)


def write_links(root: Path, plan: Plan, clips: list[Path]) -> None:
    """Every video a hard link of one of `clips` (short real videos), so the manifest probes real files."""
    for k, v in enumerate(plan.videos):
        path = root / v.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.link(clips[k % len(clips)], path)
    write_metadata(root, plan)


def tiny_clip(path: Path, variant: int = 0) -> Path:
    """A 1 s real talking-head clip, 176x144 (what the count-bound stages need from a video: that it probes)."""
    import cv2
    from mesodata.pipeline import footage

    src = footage.carphone_frames()
    frames = [cv2.resize(f, (176, 144), interpolation=cv2.INTER_AREA) for f in src[variant * 3:variant * 3 + 25]]
    footage.write_video(path, frames)
    return path


def _work_size(size: tuple[int, int], lines: int = 540) -> tuple[int, int]:
    k = min(1.0, lines / min(size))
    return int(size[0] * k) // 2 * 2, int(size[1] * k) // 2 * 2


BASE_FRAMES = 30  # rendered per video, then played back and forth to its length (encoding is per frame)


def write_real(root: Path, plan: Plan, seed: int = 0) -> None:
    """Render and encode every video of `plan` at its size and length: reals are views of the sample's
    faces; a fake is its target's view with the method's manipulation (the source: another view)."""
    import cv2

    from tests.fixtures import realistic

    cv2.setNumThreads(1)
    views = realistic.views()
    renders: dict[str, tuple[list, list]] = {}

    def render(rel: str, size) -> tuple[list, list]:
        # rendered and manipulated at <= 540 lines, then upscaled: the footage is small anyway (the
        # talking head is 176x144), and 1080p rendering and face finding cost minutes per video here
        if rel not in renders:
            view = views[zlib.crc32(rel.encode()) % len(views)]
            frames = view.frames(BASE_FRAMES, _work_size(size), seed)
            renders[rel] = (frames, realistic.face_boxes(frames))
        return renders[rel]

    for v in plan.videos:
        path = root / v.rel
        if path.exists():
            continue
        if v.fake:
            tf, tb = render(v.target, v.size)
            sf, sb = render(v.rel + "#source", v.size)
            base = realistic.manipulate(v.method, tf, tb, sf, sb, variant=zlib.crc32(v.rel.encode()))
        else:
            base = render(v.rel, v.size)[0]
        if _work_size(v.size) != v.size:
            base = [cv2.resize(f, v.size, interpolation=cv2.INTER_LINEAR) for f in base]
        loop = base + base[-2:0:-1]
        realistic.encode(path, [loop[i % len(loop)] for i in range(v.frames)], 23)
    write_metadata(root, plan)


# --- the faces stage's output, synthetic --------------------------------------------------------
_BASES = None


def _base_faces():
    global _BASES
    if _BASES is None:
        import cv2
        from mesodata.pipeline import footage, sample

        faces = []
        for img in (footage.carphone_frames()[0], footage.astronaut()):
            x, y, w, h = sample._face_box(img)
            c = max(w, h) * 13 // 10
            x0, y0 = max(x + w // 2 - c // 2, 0), max(y + h // 2 - c // 2, 0)
            faces.append(cv2.resize(img[y0:y0 + c, x0:x0 + c], (256, 256), interpolation=cv2.INTER_CUBIC))
        _BASES = faces
    return _BASES


def synthetic_crop(video_id: str, frame: int) -> bytes:
    """A 256x256 PNG: a real face under a per-video low-frequency field (each video's crops fall
    far from other videos' in pHash, as different people's do) and per-frame noise (a video's own
    crops stay near-duplicates)."""
    import cv2

    rng = _rng(0, "crop", video_id)
    base = _base_faces()[int(rng.integers(len(_base_faces())))].astype(np.float32)
    field_ = cv2.resize(rng.normal(0, 1, (8, 8, 3)).astype(np.float32), (256, 256), interpolation=cv2.INTER_CUBIC)
    noise = _rng(frame, "noise", video_id).normal(0, 3, base.shape)
    img = np.clip(base * 0.6 + 70 * field_ + 50 + noise, 0, 255).astype(np.uint8)
    return cv2.imencode(".png", img[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 3])[1].tobytes()


def synthetic_unit(payload: dict):
    """Stands in for the faces stage's unit (pipeline.stages.faces._unit): the rows it would write
    for one video, every sampled frame a face, without decoding anything."""
    from mesodata.pipeline.stages import faces

    p, m = payload["params"], payload["row"]
    n = p["frames"]
    total = m["frames"] or n
    rows = []
    for k in range(n):
        i = int(k * total / n)
        rows.append({"frame_index": i, "timestamp": i / 25.0, "status": "face", "error": None,
                     "bbox": {"x": 40, "y": 30, "w": 80, "h": 80}, "crop": {"x": 28, "y": 18, "size": 104},
                     "verified": True,
                     "image": {"bytes": synthetic_crop(m["video_id"], i), "path": f"{m['video_id']}/{i:06d}.png"}})
    return faces._unit_table(payload, rows)


def timed_unit(payload: dict):
    """The faces stage's own unit, its wall and CPU seconds appended to $BENCH_SCALE_TIMES/<pid>.jsonl
    (a worker runs one unit at a time, so the process's CPU is the unit's, its threads included)."""
    import time

    from mesodata.pipeline.stages import faces

    t0, c0 = time.perf_counter(), time.process_time()
    table = faces._unit(payload)
    rec = {"path": str(payload["path"]), "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
           "faces": table.column("status").to_pylist().count("face")}
    folder = os.environ.get("BENCH_SCALE_TIMES")
    if folder:
        with open(Path(folder) / f"{os.getpid()}.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")
    return table
