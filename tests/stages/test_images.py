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


@pytest.mark.parametrize(("name", "fmt", "size", "mode"), [
    ("coffee.png", "PNG", (600, 400), "RGB"),
    ("camera.png", "PNG", (512, 512), "L"),
    ("horse.png", "PNG", (400, 328), "RGBA"),
    ("rocket.jpg", "JPEG", (640, 427), "RGB"),
    ("retina.jpg", "JPEG", (1411, 1411), "RGB"),
])
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
    response = http.Response(url="http://host/images/coffee.png", final_url="http://host/images/coffee.png",
                             status=200, content_type="image/png", body=read("coffee.png")[:5000])
    with pytest.raises(ValueError, match=r"^http://host/images/coffee\.png: cannot decode image \(5000 bytes"):
        images.describe(response)


@pytest.mark.parametrize(("name", "cut"), [("coffee.png", 0.5), ("rocket.jpg", 0.5), ("rocket.jpg", 0.999),
                                           ("horse.png", 0.97)])
def test_truncated_images_raise_a_clear_error(name, cut):
    data = read(name)
    short = data[: int(len(data) * cut)]
    with pytest.raises(ValueError, match=rf"^images/{name}: cannot decode image \({len(short)} bytes, sha256 "
                                         rf"{hashlib.sha256(short).hexdigest()[:12]}\): .*[Tt]runcated"):
        images.describe(short, name=f"images/{name}")


def test_png_missing_its_end_chunk_is_caught():
    data = read("coffee.png")
    assert data[-12:-8] == b"\x00\x00\x00\x00" and data[-8:-4] == b"IEND"
    with pytest.raises(ValueError, match="truncated"):
        images.describe(data[:-12])


def test_not_an_image():
    with pytest.raises(ValueError, match=r"image: cannot decode image .*not a recognised image format"):
        images.describe(b"<html>404 Not Found</html>")
