"""stages.images on the bundled images, and on broken ones."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages import http, images

DATA = Path(__file__).resolve().parents[2] / "data"


def read(name: str) -> bytes:
    return (DATA / "images" / name).read_bytes()


@pytest.mark.parametrize(
    ("name", "fmt", "size", "mode"),
    [
        ("coffee.png", "PNG", (600, 400), "RGB"),
        ("camera.png", "PNG", (512, 512), "L"),
        ("horse.png", "PNG", (400, 328), "RGBA"),
        ("rocket.jpg", "JPEG", (640, 427), "RGB"),
        ("retina.jpg", "JPEG", (1411, 1411), "RGB"),
    ],
)
def test_describes_bundled_images(name, fmt, size, mode):
    data = read(name)
    info = images.describe(data)
    assert (info.format, (info.width, info.height), info.mode, info.bands) == (fmt, size, mode, mode)
    assert info.sha256 == hashlib.sha256(data).hexdigest() and info.byte_size == len(data)
    pixels = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64).reshape(size[1], size[0], -1)
    assert info.mean == pytest.approx(list(pixels.mean(axis=(0, 1))), abs=1e-6)  # computed independently


def test_every_catalog_image_decodes():
    catalog = json.loads((DATA / "catalog.json").read_text())
    infos = [images.describe((DATA / entry["path"]).read_bytes()) for entry in catalog]
    assert len({i.sha256 for i in infos}) == len(catalog) == 15
    assert {i.format for i in infos} == {"PNG", "JPEG"}


def test_palette_image_is_averaged_as_rgb():
    buf = io.BytesIO()
    Image.open(io.BytesIO(read("chelsea.png"))).convert("P").save(buf, format="PNG")
    info = images.describe(buf.getvalue())
    assert (info.mode, info.bands, len(info.mean)) == ("P", "RGB", 3)


def test_accepts_a_download_and_names_its_url():
    response = http.Response(
        url="http://host/images/coffee.png",
        final_url="http://host/images/coffee.png",
        status=200,
        content_type="image/png",
        body=read("coffee.png")[:5000],
    )
    with pytest.raises(ValueError, match=r"^http://host/images/coffee\.png: cannot decode image \(5000 bytes"):
        images.describe(response)


@pytest.mark.parametrize(
    ("name", "cut"), [("coffee.png", 0.5), ("rocket.jpg", 0.5), ("rocket.jpg", 0.999), ("horse.png", 0.97)]
)
def test_truncated_images_raise_a_clear_error(name, cut):
    data = read(name)
    short = data[: int(len(data) * cut)]
    with pytest.raises(
        ValueError,
        match=rf"^images/{name}: cannot decode image \({len(short)} bytes, sha256 "
        rf"{hashlib.sha256(short).hexdigest()[:12]}\): .*[Tt]runcated",
    ):
        images.describe(short, name=f"images/{name}")


def test_png_missing_its_end_chunk_is_caught():
    data = read("coffee.png")
    assert data[-12:-8] == b"\x00\x00\x00\x00" and data[-8:-4] == b"IEND"
    with pytest.raises(ValueError, match="truncated"):
        images.describe(data[:-12])


def test_not_an_image():
    with pytest.raises(ValueError, match=r"image: cannot decode image .*not a recognised image format"):
        images.describe(b"<html>404 Not Found</html>")


def one_colour_png(width: int, height: int) -> bytes:
    """A valid greyscale PNG, compressed row by row: a large image in a small file."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


class TestPixelLimit:
    def test_a_pixel_bomb_fails_by_default_without_a_pillow_warning(self, recwarn):
        bomb = one_colour_png(12000, 12000)
        assert len(bomb) < 200_000
        with pytest.raises(ValueError) as info:
            images.describe(bomb, name="bomb.png")
        message = str(info.value)
        assert message.startswith(f"bomb.png: image refused ({len(bomb)} bytes, sha256 ")
        assert "12000×12000 = 144,000,000 pixels, more than max_pixels=89,478,485" in message
        assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]

    def test_the_limit_is_an_option(self):
        png = one_colour_png(2000, 1500)
        assert images.describe(png).width == 2000
        with pytest.raises(ValueError, match="2000×1500 = 3,000,000 pixels, more than max_pixels=1,000,000"):
            images.describe(png, max_pixels=1_000_000)
        assert images.describe(png, max_pixels=None).height == 1500


def test_a_download_kept_in_a_file_is_read_from_it(tmp_path):
    data = read("coffee.png")
    path = tmp_path / "coffee.body"
    path.write_bytes(data)
    spooled = http.Response(
        url="http://x/coffee.png",
        final_url="http://x/coffee.png",
        status=200,
        content_type="image/png",
        body=b"",
        body_file=str(path),
        size=len(data),
    )
    assert images.describe(spooled) == images.describe(data)
    path.write_bytes(data[:1000])
    with pytest.raises(ValueError, match=r"^http://x/coffee.png: cannot decode image \(1000 bytes"):
        images.describe(spooled)
