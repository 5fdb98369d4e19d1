import io
import zlib

import numpy as np
import pytest
from PIL import Image

from gaikan.errors import ImageError
from gaikan.io import decode_image, find_images, load_image, load_images, load_mvtec


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)


def test_8bit_grey_is_taken_as_is(tmp_path):
    a = np.arange(200, dtype=np.uint8).reshape(10, 20)
    Image.fromarray(a).save(tmp_path / "g.png")
    np.testing.assert_array_equal(load_image(tmp_path / "g.png"), a)


def test_16bit_is_divided_by_257(tmp_path):
    a = np.arange(200, dtype=np.uint16).reshape(10, 20) * 300
    Image.fromarray(a).save(tmp_path / "g16.png")
    np.testing.assert_allclose(load_image(tmp_path / "g16.png"), a / 257.0, rtol=1e-6)
    Image.fromarray(a).save(tmp_path / "g16.tif")
    np.testing.assert_allclose(load_image(tmp_path / "g16.tif"), a / 257.0, rtol=1e-6)


@pytest.mark.parametrize("fmt", ["png", "bmp", "tiff"])
def test_rgb_is_bt601_luma(tmp_path, rgb, fmt):
    Image.fromarray(rgb).save(tmp_path / f"c.{fmt}")
    want = rgb @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(load_image(tmp_path / f"c.{fmt}"), want, atol=0.51)


def test_rgba_palette_and_jpeg(tmp_path, rgb):
    want = rgb @ np.array([0.299, 0.587, 0.114])
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_allclose(load_image(tmp_path / "a.png"), want, atol=0.51)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (12, 16)
    Image.fromarray(rgb).save(tmp_path / "j.jpg", quality=95)
    assert np.abs(load_image(tmp_path / "j.jpg") - want).mean() < 12


def test_resize_once(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert load_image(tmp_path / "c.png", size=(6, 8)).shape == (6, 8)
    assert load_image(tmp_path / "c.png", size=5).shape == (5, 5)


def test_bad_files_name_file_and_fix(tmp_path):
    Image.fromarray(np.zeros((50, 50), np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not an image at all")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"trunc\.png.*(truncated|corrupt)"):
        load_image(tmp_path / "trunc.png")
    with pytest.raises(ImageError, match=r"text\.png: not an image"):
        load_image(tmp_path / "text.png")
    with pytest.raises(ImageError, match=r"empty\.png: the file is empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match=r"over the limit.*--max-pixels"):
        load_image(tmp_path / "ok.png", max_pixels=100)


def test_decompression_bomb_is_refused_before_decoding():
    # A PNG header claiming 100000 x 100000 pixels: refused from the header.
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = (100000).to_bytes(4, "big") * 2
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # valid IHDR CRC
    with pytest.raises(ImageError, match="pixels|too large"):
        decode_image(bytes(data), "bomb.png")


def test_decode_checks_content_not_name(rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    assert decode_image(buf.getvalue(), "looks-like.txt").shape == (12, 16)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="GIF")
    with pytest.raises(ImageError, match="GIF images are not supported"):
        decode_image(buf.getvalue(), "x.png")
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"", "x.png")


def test_load_images_skips_bad_and_goes_on(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (9, 9), dtype=np.uint8)).save(tmp_path / "3.png")
    (tmp_path / "4.png").write_text("junk")
    res = load_images(find_images([tmp_path]))
    assert res.images.shape == (3, 8, 8)
    assert [p.name for p in res.paths] == ["0.png", "1.png", "2.png"]
    assert {p.name for p, _ in res.errors} == {"3.png", "4.png"}
    assert any("--size" in msg for _, msg in res.errors)
    assert res.shapes == [(8, 8)] * 3
    res = load_images(find_images([tmp_path]), size=8)
    assert res.images.shape == (4, 8, 8)
    # shapes: the original size of each loaded image, aligned with images/paths
    assert res.shapes == [(8, 8)] * 3 + [(9, 9)]


def test_damaged_file_of_a_known_format_is_called_corrupt(rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[20] ^= 0xFF  # inside IHDR: Pillow no longer recognises the file
    with pytest.raises(ImageError, match="x.png: corrupt PNG file"):
        decode_image(bytes(data), "x.png")
    with pytest.raises(ImageError, match="x.png: not an image"):
        decode_image(b"just text", "x.png")


def test_find_images(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for p in ["a/x.png", "a/b/y.JPG", "a/notes.txt", ".hidden/z.png"]:
        (tmp_path / p).write_bytes(b"")
    assert [p.name for p in find_images([tmp_path])] == ["y.JPG", "x.png"]  # sorted by path
    assert [p.name for p in find_images([tmp_path / "a" / "notes.txt"])] == ["notes.txt"]
    with pytest.raises(FileNotFoundError):
        find_images([tmp_path / "nope"])


def test_load_mvtec(tmp_path):
    rng = np.random.default_rng(0)
    for folder, n in [("train/good", 3), ("test/good", 2), ("test/crack", 2)]:
        (tmp_path / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8)).save(
                tmp_path / folder / f"{i:03d}.png"
            )
    (tmp_path / "ground_truth/crack").mkdir(parents=True)
    m = np.zeros((10, 10), np.uint8)
    m[2:4, 2:4] = 255
    Image.fromarray(m).save(tmp_path / "ground_truth/crack/000_mask.png")
    d = load_mvtec(tmp_path)
    assert d.train.images.shape == (3, 10, 10)
    assert d.test_types == ["crack", "crack", "good", "good"]
    assert list(d.labels) == [1, 1, 0, 0]
    assert d.has_masks and d.masks[0].sum() == 4 and d.masks[1].sum() == 0


def test_blank_frames_are_refused_unless_allowed(tmp_path):
    Image.fromarray(np.full((20, 20), 3, np.uint8)).save(tmp_path / "capped.png")
    with pytest.raises(ImageError, match=r"capped\.png: the image is blank.*camera"):
        load_image(tmp_path / "capped.png")
    assert load_image(tmp_path / "capped.png", allow_blank=True).std() == 0
    res = load_images([tmp_path / "capped.png"])
    assert res.images.shape[0] == 0 and "blank" in res.errors[0][1]


def test_probe_shapes_reads_headers_turns_exif_rotations_and_skips_bad_files(tmp_path):
    from gaikan.io import probe_shapes

    Image.new("L", (200, 60)).save(tmp_path / "wide.png")
    rotated = Image.new("L", (200, 60))
    exif = rotated.getexif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    rotated.save(tmp_path / "turned.jpg", exif=exif)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    paths = [tmp_path / n for n in ("wide.png", "turned.jpg", "broken.png")]
    assert probe_shapes(paths) == [(60, 200), (200, 60)]
    assert len(probe_shapes([tmp_path / "wide.png"] * 100, limit=8)) == 8
