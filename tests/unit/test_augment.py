"""The paper's augmentations on a real face crop: what each one does, exactly, and reproducibly."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mesodata.pipeline import augment
from mesodata.pipeline.errors import UserError
from mesodata.pipeline.footage import astronaut, carphone_frames


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """The astronaut's face, a real 256x256 RGB crop."""
    return np.ascontiguousarray(cv2.resize(astronaut()[45:225, 145:325], (256, 256), interpolation=cv2.INTER_AREA))


@pytest.fixture(scope="module")
def paper() -> dict[str, dict]:
    return {s["name"]: s for s in augment.load_preset("paper")["train"]}


def sharpness(rgb: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def test_paper_preset_is_the_papers_eight(paper):
    assert list(paper) == ["blur3", "blur9", "blur15", "rotate45", "rotate90", "rotate180",
                           "scale_up50", "scale_down50"]
    assert [paper[f"blur{k}"]["kernel"] for k in (3, 9, 15)] == [3, 9, 15]
    assert paper["scale_up50"]["factor"] == 1.5 and paper["scale_down50"]["factor"] == 0.5
    none = augment.load_preset("none")
    assert none["train"] == [] and [s["name"] for s in none["perturb"]] == list(paper)


def test_blur_lowers_sharpness_monotonically_by_kernel(face, paper):
    s = [sharpness(face)]
    for k in (3, 9, 15):
        out, params = augment.apply(face, paper[f"blur{k}"], seed=1)
        assert out.shape == face.shape and out.dtype == np.uint8
        assert params == {"transform": "gaussian_blur", "kernel": k, "sigma": augment.opencv_sigma(k), "seed": 1}
        s.append(sharpness(out))
    assert s[0] > s[1] > s[2] > s[3], s
    assert s[3] < 0.1 * s[0]
    # the same blur OpenCV gives for this kernel and sigma (albumentations' kernel, same maths)
    ref = cv2.GaussianBlur(face, (9, 9), augment.opencv_sigma(9), borderType=cv2.BORDER_REFLECT_101)
    out, _ = augment.apply(face, paper["blur9"], seed=1)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


@pytest.mark.parametrize("angle", [90, 180, 270])
@pytest.mark.parametrize("direction", ["ccw", "cw", "random"])
def test_right_angles_are_exact_rot90(face, angle, direction):
    spec = augment.normalize({"transform": "rotate", "angle": angle, "direction": direction})
    for seed in range(6):
        out, params = augment.apply(face, spec, seed)
        assert params["exact"] is True and abs(params["angle"]) == angle
        if angle == 180:
            assert params["angle"] == 180
        elif direction != "random":
            assert params["angle"] == (angle if direction == "ccw" else -angle)
        assert np.array_equal(out, np.rot90(face, params["angle"] // 90))
        assert np.array_equal(out, np.rot90(face, params["rot90_k"]))
        assert np.array_equal(np.sort(out, axis=None), np.sort(face, axis=None))


def test_random_direction_is_drawn_per_sample(face, paper):
    angles = {augment.apply(face, paper["rotate90"], augment.sample_seed(0, "v", i, "rotate90"))[1]["angle"]
              for i in range(20)}
    assert angles == {90, -90}


def test_rotate45_turns_the_face_and_keeps_the_size(face, paper):
    out, params = augment.apply(face, paper["rotate45"], seed=3)
    assert out.shape == (256, 256, 3) and params["exact"] is False and abs(params["angle"]) == 45
    assert not np.array_equal(out, face)
    # it is the rotation about the centre: rotating the centre back by OpenCV matches the original there
    m = cv2.getRotationMatrix2D((127.5, 127.5), -params["angle"], 1.0)
    back = cv2.warpAffine(out, m, (256, 256), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    c = slice(80, 176)
    err = np.abs(back[c, c].astype(float) - face[c, c].astype(float)).mean()
    assert err < 6, err
    # and not some other angle
    wrong = cv2.warpAffine(out, cv2.getRotationMatrix2D((127.5, 127.5), params["angle"], 1.0), (256, 256))
    assert np.abs(wrong[c, c].astype(float) - face[c, c].astype(float)).mean() > 3 * err
    # reflected border, no black corners
    assert out[:8, :8].mean() > 10


def test_scales_keep_256_and_scale_the_content(face, paper):
    up, pu = augment.apply(face, paper["scale_up50"], seed=0)
    down, pd = augment.apply(face, paper["scale_down50"], seed=0)
    assert up.shape == down.shape == (256, 256, 3)
    assert pu["resized"] == 384 and pu["crop_yx"] == [64, 64] and pd["resized"] == 128
    big = cv2.resize(face, (384, 384), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(up, big[64:320, 64:320])  # +50%: the centre of the enlarged crop
    small = cv2.resize(face, (128, 128), interpolation=cv2.INTER_AREA)
    assert np.array_equal(down[64:192, 64:192], small)  # -50%: the shrunk crop in the middle ...
    assert np.array_equal(down[63, 64:192], small[1]) and np.array_equal(down[64:192, 192], small[:, 126])  # ... reflected around
    assert sharpness(up) < sharpness(face) < sharpness(down)


def test_random_crop_position_jpeg_and_noise_are_seeded(face):
    specs = [augment.normalize({"transform": "scale", "factor": 2.0, "position": "random"}),
             augment.normalize({"transform": "jpeg", "quality": [20, 60]}),
             augment.normalize({"transform": "gaussian_noise", "sigma": [4, 12]}),
             augment.normalize({"transform": "gaussian_blur", "kernel": 7, "sigma": [0.5, 3.0]})]
    for spec in specs:
        a, pa_ = augment.apply(face, spec, seed=11)
        b, pb = augment.apply(face, spec, seed=11)
        assert np.array_equal(a, b) and pa_ == pb and a.shape == face.shape
        others = [augment.apply(face, spec, seed=s) for s in range(12, 20)]
        assert any(p != pa_ for _, p in others), spec["name"]
        assert not np.array_equal(a, face)
    out, p = augment.apply(face, specs[1], seed=5)
    assert 20 <= p["quality"] <= 60
    json.dumps(p)  # every recorded parameter is JSON


def test_parameters_without_the_image_are_those_apply_records(face, paper):
    """What on-read shards store (params_for, from the crop's size alone) is what apply uses, and
    replay makes the very pixels apply made from it."""
    specs = [*paper.values(),
             augment.normalize({"transform": "rotate", "angle": 30, "direction": "random", "border": "constant"}),
             augment.normalize({"transform": "scale", "factor": 2.0, "position": "random"}),
             augment.normalize({"transform": "jpeg", "quality": [20, 60]}),
             augment.normalize({"transform": "gaussian_noise", "sigma": [4, 12]}),
             augment.normalize({"transform": "gaussian_blur", "kernel": 7, "sigma": [0.5, 3.0]})]
    for spec in specs:
        for seed in (3, augment.sample_seed(0, "v", 7, spec["name"])):
            out, used = augment.apply(face, spec, seed)
            assert augment.params_for(spec, seed, face.shape) == used, spec["name"]
            again = augment.replay(face.copy(), spec, json.dumps(used, sort_keys=True))
            assert np.array_equal(again, out), spec["name"]
    with pytest.raises(ValueError, match="square"):
        augment.params_for(paper["scale_up50"], 1, (256, 200, 3))


def _in_worker(spec, seed):
    img = np.ascontiguousarray(cv2.resize(carphone_frames()[10], (256, 256)))
    return augment.apply(img, spec, seed)


def test_same_copy_in_another_process(paper):
    """A worker process (pickled specs, fresh albumentations objects) makes the very same copies."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    specs = [*paper.values(), augment.normalize({"transform": "jpeg", "quality": [10, 90]}),
             augment.normalize({"transform": "gaussian_noise", "sigma": [1, 20]})]
    jobs = [(s, augment.sample_seed(3, "car", 10, s["name"])) for s in specs]
    local = [_in_worker(*j) for j in jobs]
    # a spawned pool of its own: joblib's loky pool is a process-wide singleton that the runner's
    # LocalExecutor may have left behind in this test session
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        remote = list(pool.map(_in_worker, *zip(*jobs)))
    for (a, pa_), (b, pb) in zip(local, remote):
        assert pa_ == pb and np.array_equal(a, b)


def test_sample_seed_depends_on_every_part():
    base = augment.sample_seed(0, "v/1", 10, "blur3")
    assert base == augment.sample_seed(0, "v/1", 10, "blur3")
    others = {augment.sample_seed(1, "v/1", 10, "blur3"), augment.sample_seed(0, "v/2", 10, "blur3"),
              augment.sample_seed(0, "v/1", 11, "blur3"), augment.sample_seed(0, "v/1", 10, "blur9")}
    assert base not in others and len(others) == 4
    assert 0 <= base < 2 ** 63


def test_preset_files_and_their_errors(tmp_path):
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"train": [{"transform": "scale", "factor": 0.75}], "perturb": []}))
    p = augment.load_preset(js)
    assert p["preset"] == "p" and [s["name"] for s in p["train"]] == ["scale_down25"] and p["perturb"] == []
    y = tmp_path / "q.yaml"
    y.write_text("train:\n  - {transform: gaussian_blur}\n")
    assert [s["name"] for s in augment.load_preset(y)["perturb"]][0] == "blur3"  # perturb defaults to the paper's
    bad = [
        ("train: [{transform: gaussian_blur, kernel: 4}]", r"'kernel' parameter must be an odd integer.*Got 4"),
        ("train: [{transform: rotate, angle: 0}]", r"'angle'.*Got 0"),
        ("train: [{transform: swirl}]", "unknown transform 'swirl'"),
        ("train: [{transform: rotate, speed: 2}]", "takes no parameter 'speed'"),
        ("train: [{transform: scale, factor: 1}]", r"'factor'.*Got 1"),
        ("train: [{transform: jpeg}, {transform: jpeg}]", "names 'jpeg50' twice"),
        ("train: [{transform: jpeg, quality: [90, 10]}]", r"'quality'.*Got \[90, 10\]"),
        ("colours: []", "expected a mapping"),
        ("train: [oops", "cannot parse"),
    ]
    for text, msg in bad:
        y.write_text(text)
        with pytest.raises(UserError, match=msg):
            augment.load_preset(y)
    with pytest.raises(UserError, match="neither"):
        augment.load_preset(tmp_path / "absent.yaml")


def test_apply_refuses_what_is_not_an_rgb_crop(paper):
    with pytest.raises(ValueError, match="RGB uint8"):
        augment.apply(np.zeros((256, 256), np.uint8), paper["blur3"], 0)


def test_shipped_preset_file_is_the_builtin_paper_preset():
    path = Path(augment.__file__).parent / "presets" / "paper.yaml"
    from_file = augment.load_preset(path)
    builtin = augment.load_preset("paper")
    assert from_file["train"] == builtin["train"] and from_file["perturb"] == builtin["perturb"]
