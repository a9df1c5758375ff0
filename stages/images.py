"""Image stages: decode with Pillow and describe an image in a few numbers.

``describe`` checks the whole file (Pillow's ``verify`` for the container, then a full
decode of the pixels), so a truncated or corrupt download raises a ``ValueError`` that
names the image instead of yielding half an answer. It is CPU-bound: run it with
``kind="cpu"``.

Example:
    >>> from pathlib import Path
    >>> info = describe(Path("data/images/coffee.png").read_bytes())   # doctest: +SKIP
    >>> info.width, info.height, info.mode                               # doctest: +SKIP
    (600, 400, 'RGB')
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Protocol

from PIL import Image, ImageStat, UnidentifiedImageError

# Modes whose bands ImageStat averages directly; others are converted to RGB(A) first.
_STAT_MODES = ("L", "LA", "RGB", "RGBA", "CMYK")


class HasBody(Protocol):
    """Anything carrying the image's bytes, such as ``stages.http.Response``."""

    body: bytes


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What ``describe`` finds out about one image.

    Attributes:
        format: the file format Pillow detected, e.g. ``PNG`` or ``JPEG``.
        width: pixels across.
        height: pixels down.
        mode: Pillow's pixel mode, e.g. ``L`` (grey), ``RGB``, ``RGBA``.
        bands: the band names ``mean`` follows, e.g. ``RGB``.
        mean: the mean value of each band, 0-255.
        sha256: the hex SHA-256 of the file's bytes (a content hash).
        byte_size: the file's size in bytes.
    """

    format: str
    width: int
    height: int
    mode: str
    bands: str
    mean: list[float]
    sha256: str
    byte_size: int


def describe(image: bytes | bytearray | memoryview | HasBody, *, name: str | None = None) -> ImageInfo:
    """Decode an image and describe it: size, mode, mean colour, content hash.

    Args:
        image: the encoded image (PNG, JPEG, ...), or an object with a ``body`` (a download).
        name: what to call the image in error messages; defaults to the object's ``url``
            or ``path`` attribute when it has one.

    Returns:
        The ``ImageInfo``.

    Raises:
        ValueError: the bytes are not an image Pillow can read, or the image is truncated
            or corrupt; the message names the image, its size and its hash prefix.

    Example:
        >>> describe(open("data/images/camera.png", "rb").read()).mean   # doctest: +SKIP
        [129.06...]
    """
    data = bytes(image.body) if hasattr(image, "body") else bytes(image)  # type: ignore[arg-type]
    label = name or getattr(image, "url", None) or getattr(image, "path", None) or "image"
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()  # container-level check: chunk CRCs, a missing end
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decode every pixel: a truncated body fails here
            stat_img = img if img.mode in _STAT_MODES else img.convert("RGBA" if _has_alpha(img) else "RGB")
            mean = [float(m) for m in ImageStat.Stat(stat_img).mean]
            return ImageInfo(format=img.format or "unknown", width=img.width, height=img.height, mode=img.mode,
                             bands="".join(stat_img.getbands()), mean=mean, sha256=digest, byte_size=len(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = "not a recognised image format" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise ValueError(f"{label}: cannot decode image ({len(data)} bytes, sha256 {digest[:12]}): {reason}") from None


def _has_alpha(img: Image.Image) -> bool:
    return "A" in img.getbands() or "transparency" in img.info
