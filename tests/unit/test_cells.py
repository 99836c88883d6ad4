"""Image cells (pipeline/cells.py): the one encoder and decoder of every crop an artifact stores.

The artifacts must stay byte-identical to what the stages wrote before cells.py owned the job, so
each encoder is checked against OpenCV called with the options that stage used to pass, and the
decoder (Pillow) against OpenCV's pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa
import pytest

from mesodata.pipeline import cells


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A real 256x256 RGB face crop (the astronaut portrait of scikit-image)."""
    from skimage import data

    return np.ascontiguousarray(cv2.resize(data.astronaut()[0:300, 120:420], (256, 256), interpolation=cv2.INTER_AREA))


def _bgr(rgb):
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def test_faces_png_is_the_fast_png_the_faces_stage_wrote(face):
    data = cells.encode(face, "png")
    before = cv2.imencode(".png", _bgr(face), [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER,
                                               cv2.IMWRITE_PNG_FILTER_UP, cv2.IMWRITE_PNG_STRATEGY,
                                               cv2.IMWRITE_PNG_STRATEGY_RLE])[1].tobytes()
    assert data == before
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and cells.image_format(data) == "png"
    assert np.array_equal(cells.decode(data), face)  # lossless, RGB order kept


def test_jpeg_crops_and_their_pixels(face):
    data = cells.encode(face, "jpeg", quality=90)
    assert data == cv2.imencode(".jpg", _bgr(face), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    assert cells.image_format(data) == "jpeg"
    decoded = cells.decode(data)
    # Pillow's pixels are OpenCV's, so dedupe's hashes and the shards' augmentations are unchanged
    assert np.array_equal(decoded, cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                                                cv2.COLOR_BGR2RGB))
    assert 0 < np.abs(decoded.astype(int) - face).mean() < 3  # lossy, but close


def test_shards_png_at_a_level_and_the_export_png(face):
    for level in (0, 6, 9):
        assert cells.encode_png(face, cells.png_level(level)) == cv2.imencode(
            ".png", _bgr(face), [cv2.IMWRITE_PNG_COMPRESSION, level])[1].tobytes()
    jpeg = cells.encode_jpeg(face, 85)
    # export's PNG of a JPEG crop: OpenCV's default options, as export wrote it
    want = cv2.imencode(".png", cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))[1].tobytes()
    assert cells.as_png(jpeg) == want
    png = cells.encode(face)
    assert cells.as_png(png) is png


def test_decode_resizes_only_to_another_size_and_refuses_garbage(face):
    small = cells.encode(cv2.resize(face, (100, 80)))
    assert cells.decode(small).shape == (80, 100, 3)
    assert cells.decode(small, 256).shape == (256, 256, 3)
    assert np.array_equal(cells.decode(cells.encode(face), 256), face)
    with pytest.raises(ValueError, match=r"not a decodable image \(12 bytes, starting b'not an i'\)"):
        cells.decode(b"not an image")


def test_cells_are_the_arrow_struct(tmp_path, face):
    data = cells.encode(face)
    table = pa.table({"image": pa.array([cells.cell(data, "a.png"), cells.cell(None, "b.png")], cells.ARROW_TYPE)})
    assert table.schema.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    (tmp_path / "b.png").write_bytes(data)
    first, second = table["image"].to_pylist()
    assert cells.cell_bytes(first) == data
    assert cells.cell_bytes(second, tmp_path) == data  # bytes missing: read from its path
    with pytest.raises(ValueError, match="no image bytes or path"):
        cells.cell_bytes(None)
