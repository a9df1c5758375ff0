"""Image stages: decode with Pillow and describe an image in a few numbers.

``describe`` checks the whole file (Pillow's ``verify`` for the container, then a full
decode of the pixels), so a truncated or corrupt download raises a ``ValueError`` that
names the image instead of yielding half an answer. It is CPU-bound: run it with
``kind="cpu"``.

A small file can hold a huge image (a 12000×12000 PNG of one colour is 140 KB), and decoding
it takes width × height × bands bytes. ``describe`` reads the size from the header first and
fails the item with a ``ValueError`` when it is over ``max_pixels`` (by default Pillow's own
warning threshold, about 89.5 million pixels), before decoding anything. A download kept in a
file (``stages.http.Response.body_file``) is read from that file, never loaded whole.

Example:
    >>> from pathlib import Path
    >>> info = describe(Path("data/images/coffee.png").read_bytes())   # doctest: +SKIP
    >>> info.width, info.height, info.mode                               # doctest: +SKIP
    (600, 400, 'RGB')
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import IO, Protocol

from PIL import Image, ImageStat, UnidentifiedImageError

# Modes whose bands ImageStat averages directly; others are converted to RGB(A) first.
_STAT_MODES = ("L", "LA", "RGB", "RGBA", "CMYK")
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's DecompressionBombWarning threshold: ~0.25 GiB as 24-bit RGB
_HASH_CHUNK = 2**20


class HasBody(Protocol):
    """Anything carrying the image's bytes, such as ``stages.http.Response``.

    An object may also have a ``body_file`` (a path, or ``None``): when set, the image is read
    from that file and ``body`` is ignored.
    """

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


def describe(
    image: bytes | bytearray | memoryview | HasBody,
    *,
    name: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> ImageInfo:
    """Decode an image and describe it: size, mode, mean colour, content hash.

    Args:
        image: the encoded image (PNG, JPEG, ...), or an object with a ``body`` (a download),
            read from its ``body_file`` when it has one.
        name: what to call the image in error messages; defaults to the object's ``url``
            or ``path`` attribute when it has one.
        max_pixels: the largest width × height decoded; a larger image fails with a
            ``ValueError`` before its pixels are decoded. ``None`` lifts this limit (Pillow's
            own hard limit, twice its warning threshold, still holds).

    Returns:
        The ``ImageInfo``.

    Raises:
        ValueError: the bytes are not an image Pillow can read, the image is truncated or
            corrupt, or it has more than ``max_pixels`` pixels; the message names the image,
            its size and its hash prefix.

    Example:
        >>> describe(open("data/images/camera.png", "rb").read()).mean   # doctest: +SKIP
        [129.06...]
        >>> describe(huge_png, max_pixels=10_000_000)                    # doctest: +SKIP
        ValueError: image: 12000×12000 = 144,000,000 pixels, more than max_pixels=10,000,000 ...
    """
    label = name or getattr(image, "url", None) or getattr(image, "path", None) or "image"
    with _open(image) as source:
        digest, size = _sha256(source)
        try:
            with _quiet_bomb_warning():
                with Image.open(source) as probe:
                    _check_pixels(probe, max_pixels)
                    probe.verify()  # container-level check: chunk CRCs, a missing end
                source.seek(0)
                with Image.open(source) as img:
                    img.load()  # decode every pixel: a truncated body fails here
                    stat_img = img if img.mode in _STAT_MODES else img.convert("RGBA" if _has_alpha(img) else "RGB")
                    mean = [float(m) for m in ImageStat.Stat(stat_img).mean]
                    return ImageInfo(
                        format=img.format or "unknown",
                        width=img.width,
                        height=img.height,
                        mode=img.mode,
                        bands="".join(stat_img.getbands()),
                        mean=mean,
                        sha256=digest,
                        byte_size=size,
                    )
        except _PixelLimit as exc:
            raise ValueError(f"{label}: image refused ({size} bytes, sha256 {digest[:12]}): {exc}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            reason = "not a recognised image format" if isinstance(exc, UnidentifiedImageError) else str(exc)
            raise ValueError(f"{label}: cannot decode image ({size} bytes, sha256 {digest[:12]}): {reason}") from None


class _PixelLimit(ValueError):
    """The header announces more pixels than the caller accepts."""


def _check_pixels(img: Image.Image, max_pixels: int | None) -> None:
    pixels = img.width * img.height
    if max_pixels is not None and pixels > max_pixels:
        raise _PixelLimit(
            f"{img.width}×{img.height} = {pixels:,} pixels, more than max_pixels={max_pixels:,}"
            " (a decompression bomb?); raise max_pixels to accept it"
        )


def _open(image: bytes | bytearray | memoryview | HasBody) -> IO[bytes]:
    path = getattr(image, "body_file", None)
    if path:
        return open(path, "rb")  # closed by the caller's with-block
    data = image.body if hasattr(image, "body") else image
    return io.BytesIO(bytes(data))


def _sha256(source: IO[bytes]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := source.read(_HASH_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    source.seek(0)
    return digest.hexdigest(), size


class _quiet_bomb_warning(warnings.catch_warnings):
    """Pillow warns past its threshold; ``max_pixels`` decides instead (and fails the item)."""

    def __enter__(self) -> None:
        super().__enter__()
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def _has_alpha(img: Image.Image) -> bool:
    return "A" in img.getbands() or "transparency" in img.info
