"""The embedded sample: a small dataset in the three real layouts, from real face footage.

Reals are re-framed real footage (the carphone talking head, the astronaut portrait under a slow
camera move); fakes are made by a real manipulation: the face of another clip is swapped in,
colour-matched, re-rendered at a third of its resolution and blended through a feathered mask, as early
deepfakes look. The sample also holds
the faults every ingest must survive, so the demo's report shows them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from . import footage

N_FRAMES = 40
SAMPLE_VIDEOS = 44  # videos the sample encodes (its progress bar's total)
RERENDER = 3  # the swapped face is rendered at 1/RERENDER of its size in the frame, then upscaled
_CASCADE = None


@dataclass(frozen=True)
class Clip:
    """A real clip: footage `kind` re-framed by an in-plane tilt, a mirror and a horizontal squeeze.

    Only two real faces load offline, so the sample's "people" are views of them; the views below
    were chosen because their face crops stay far apart in pHash (no pair within 10 bits), so the
    dedupe stage keeps them apart and the split has groups to spread.
    """

    kind: str  # "carphone" or "astronaut"
    angle: float = 0.0
    mirror: bool = False
    squeeze: float = 1.0

    def frames(self, n: int = N_FRAMES) -> list[np.ndarray]:
        if self.kind == "carphone":  # its first 40 frames face the camera
            frames = [cv2.resize(f, (352, 288), interpolation=cv2.INTER_CUBIC) for f in footage.carphone_frames()[:n]]
        else:
            frames = footage.pan(footage.astronaut(), n, (320, 320), seed=int(self.angle) % 7)
        out = []
        for f in frames:
            h, w = f.shape[:2]
            if self.angle:
                m = cv2.getRotationMatrix2D((w / 2, h / 2), self.angle, 1.0)
                f = cv2.warpAffine(f, m, (w, h), borderMode=cv2.BORDER_REFLECT)
            if self.squeeze != 1.0:
                f = cv2.resize(f, (int(w * self.squeeze) // 2 * 2, h), interpolation=cv2.INTER_AREA)
            out.append(f[:, ::-1].copy() if self.mirror else f)
        return out


# Twenty views whose crops are pairwise distinct for the dedupe stage (measured: no two within
# 10 bits of pHash) and that all yield faces.
VIEWS = [Clip("carphone", a, m, q) for a, m, q in
         ((-16, False, 1.0), (-16, False, 0.7), (-16, True, 1.0), (-16, True, 0.7), (0, False, 1.0), (0, True, 1.0),
          (-16, False, 1.3), (-16, True, 1.3), (0, False, 1.3), (0, True, 1.3))]
VIEWS += [Clip("astronaut", a, m, q) for a, m, q in
          ((-16, False, 1.0), (-16, True, 1.0), (0, False, 1.0), (0, False, 0.7), (0, True, 1.0), (0, True, 0.7),
           (16, False, 1.0), (16, False, 0.7), (16, True, 1.0), (16, True, 0.7))]


def _face_box(frame: np.ndarray):
    global _CASCADE
    if _CASCADE is None:
        _CASCADE = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    faces = _CASCADE.detectMultiScale(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), 1.1, 4, minSize=(40, 40))
    return max(faces, key=lambda b: b[2] * b[3]) if len(faces) else None


def _match_colour(face: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Give `face` the colour statistics of `region` (per channel in Lab), as face swaps do."""
    f = cv2.cvtColor(face, cv2.COLOR_RGB2LAB).astype(np.float32)
    r = cv2.cvtColor(region, cv2.COLOR_RGB2LAB).astype(np.float32)
    f = (f - f.mean((0, 1))) / (f.std((0, 1)) + 1e-6) * r.std((0, 1)) + r.mean((0, 1))
    return cv2.cvtColor(np.clip(f, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def swap(target: list[np.ndarray], source: list[np.ndarray]) -> list[np.ndarray]:
    """Paste the source's face over the target's in every frame: colour-matched, softened by a
    low-resolution re-render, and blended through a feathered elliptical mask."""
    sbox = next(b for b in map(_face_box, source) if b is not None)
    x, y, w, h = sbox
    out, box = [], None
    for i, frame in enumerate(target):
        found = _face_box(frame)
        box = found if found is not None else box
        if box is None:
            out.append(frame)
            continue
        tx, ty, tw, th = box
        region = frame[ty:ty + th, tx:tx + tw]
        face = cv2.resize(source[i % len(source)][y:y + h, x:x + w], (tw, th), interpolation=cv2.INTER_LINEAR)
        # the re-render: a generator's output is small (early face swaps: 64x64) and upscaled to the face
        small = cv2.resize(face, (max(tw // RERENDER, 8), max(th // RERENDER, 8)), interpolation=cv2.INTER_AREA)
        face = cv2.resize(small, (tw, th), interpolation=cv2.INTER_LINEAR)
        face = _match_colour(face, region)
        mask = np.zeros((th, tw), np.float32)
        cv2.ellipse(mask, (tw // 2, th // 2), (int(tw * 0.40), int(th * 0.46)), 0, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), max(tw, th) / 20)[..., None]
        blended = frame.copy()
        blended[ty:ty + th, tx:tx + tw] = (mask * face + (1 - mask) * region).astype(np.uint8)
        out.append(blended)
    return out


def _no_face_frames(n: int = N_FRAMES) -> list[np.ndarray]:
    from skimage import data

    return footage.pan(data.coffee(), n, (320, 240), seed=3)


def write_sample(root: str | Path) -> dict[str, int]:
    """Write the sample under `root`; returns how many video files each source got."""
    from .progress import Progress

    root = Path(root)
    clips: dict[int, list[np.ndarray]] = {}
    bar = Progress(SAMPLE_VIDEOS, "writing the sample", "video")  # a bar with an ETA on a terminal

    def write_video(path: Path, frames: list[np.ndarray], **options) -> None:
        footage.write_video(path, frames, **options)
        bar.update()

    try:
        return _write_sample(root, clips, write_video)
    finally:
        bar.close()


def _write_sample(root: Path, clips: dict, write_video) -> dict[str, int]:
    def real(view: int) -> list[np.ndarray]:
        if view not in clips:
            clips[view] = VIEWS[view].frames()
        return clips[view]

    counts = {}
    # --- FaceForensics++: ids 000..011 in six pairs: three train, one val, two test
    ff = root / "FaceForensics++"
    ids = [f"{i:03d}" for i in range(12)]
    view = {i: (0, 10, 1, 11, 2, 12, 3, 13, 6, 14, 7, 15)[n] for n, i in enumerate(ids)}  # a carphone and an astronaut view per pair
    for i in ids:
        write_video(ff / f"original_sequences/youtube/c23/videos/{i}.mp4", real(view[i]))
    pairs = [("000", "001"), ("002", "003"), ("008", "009"), ("004", "005"), ("006", "007"), ("010", "011")]
    for a, b in pairs:
        for t, s in ((a, b), (b, a)):
            if (t, s) == ("006", "007"):
                continue  # fault: listed by the split files, absent on disk
            write_video(ff / f"manipulated_sequences/Deepfakes/c23/videos/{t}_{s}.mp4",
                                swap(real(view[t]), real(view[s])))
    (ff / "manipulated_sequences/Deepfakes/c23/videos/007_006.mp4").write_bytes(b"")  # fault: empty
    splits = ff / "dataset/splits"
    splits.mkdir(parents=True, exist_ok=True)
    for name, chosen in (("train", pairs[:3]), ("val", pairs[3:4]), ("test", pairs[4:])):
        (splits / f"{name}.json").write_text(json.dumps([list(p) for p in chosen]))
    # 000 and 006 come from one "YouTube video": the official split leaks through it
    conv = {i: f"yt{view[i]:02d}video 0" for i in ids} | {"006": "yt00video 1"}
    (splits / "conversion_dict.json").write_text(json.dumps(conv))
    counts["ff++"] = 2 * len(ids) - 1

    # --- Celeb-DF v2: identities 0, 1, 2
    cd = root / "Celeb-DF-v2"
    ident = {0: 4, 1: 16, 2: 5, 3: 17}  # identity -> view
    for p, v in ident.items():
        write_video(cd / f"Celeb-real/id{p}_0000.mp4", real(v))
    for t, s in ((0, 1), (1, 0), (2, 3), (3, 2)):
        write_video(cd / f"Celeb-synthesis/id{t}_id{s}_0000.mp4", swap(real(ident[t]), real(ident[s])))
    write_video(cd / "YouTube-real/00000.mp4", real(18))
    # the same clip in two datasets: FF++'s 001 re-encoded at another quality
    write_video(cd / "YouTube-real/00001.mp4", real(view["001"]), crf=30)
    # fault: a truncated file
    write_video(cd / "Celeb-real/id2_0001.mp4", real(ident[2])[::-1])
    data = (cd / "Celeb-real/id2_0001.mp4").read_bytes()
    (cd / "Celeb-real/id2_0001.mp4").write_bytes(data[: len(data) * 6 // 10])
    test_list = ["1 Celeb-real/id3_0000.mp4", "0 Celeb-synthesis/id3_id2_0000.mp4",
                 "1 YouTube-real/00000.mp4", "0 Celeb-synthesis/id9_id3_0000.mp4"]  # last: absent
    (cd / "List_of_testing_videos.txt").write_text("\n".join(test_list))
    counts["celebdf"] = 11

    # --- DFDC: a preview set and one full-release part
    pv = root / "DFDC/dfdc_preview_set"
    meta = {}
    # two actors swapped into each other: one group, so both may share one view
    for target, swapped, clip in (("643049", "728115", real(19)), ("728115", "643049", real(19)[::-1])):
        rel = f"original_videos/{target}/{target}_A_001.mp4"
        write_video(pv / rel, clip)
        meta[rel] = {"label": "real", "set": "train", "augmentations": [], "target_id": int(target)}
        fake = f"method_A/{target}/{target}_A/{swapped}_{target}_A_001.mp4"
        write_video(pv / fake, swap(clip, clip[::-1]))
        meta[fake] = {"label": "fake", "set": "test" if target == "728115" else "train",
                      "augmentations": [], "target_id": target, "swapped_id": swapped}
    (pv / "dataset.json").write_text(json.dumps(meta, indent=1))
    part = root / "DFDC/dfdc_train_part_0"
    part_meta = {}
    for name, v in (("aqwertyuio", 8), ("bzxcvbnmas", 9)):
        write_video(part / f"{name}.mp4", real(v))
        part_meta[f"{name}.mp4"] = {"label": "REAL", "split": "train", "original": None}
        fake = f"c{name[1:]}.mp4"
        write_video(part / fake, swap(real(v), real(v)[::-1]))
        part_meta[fake] = {"label": "FAKE", "split": "train", "original": f"{name}.mp4"}
    write_video(part / "dnofacexxx.mp4", _no_face_frames())  # fault: no face
    part_meta["dnofacexxx.mp4"] = {"label": "REAL", "split": "train"}
    # the same clip in two datasets, byte for byte
    shutil.copyfile(ff / "original_sequences/youtube/c23/videos/000.mp4", part / "ecopiedxxx.mp4")
    part_meta["ecopiedxxx.mp4"] = {"label": "REAL", "split": "train", "original": None}
    (part / "fnotavideo.mp4").write_text("this is not a video\n")  # fault: not a video
    part_meta["fnotavideo.mp4"] = {"label": "FAKE", "split": "train", "original": "aqwertyuio.mp4"}
    write_video(part / "gunlisted.mp4", real(18)[::2])  # fault: not in metadata
    (part / "metadata.json").write_text(json.dumps(part_meta))
    counts["dfdc"] = 4 + 8 + 1
    return counts
