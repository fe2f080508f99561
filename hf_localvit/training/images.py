"""Reading dataset images: decoding with errors that name the row, and conversion of every PIL mode to RGB."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BadImageError

SKIP_HINT = "Fix or remove the file, or pass --skip-bad-images to leave unreadable images out of the run."


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: grey, palette, CMYK, YCbCr, 16-bit and float greys; alpha is dropped, as the
    transformers `image-classification` pipeline does at inference."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float32)
        if image.mode.startswith("I;16") or values.max(initial=0.0) > 255.0:
            values = values / 257.0  # 16-bit range to 8-bit
        return Image.fromarray(np.clip(values, 0, 255).round().astype(np.uint8), mode="L").convert("RGB")
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")  # through RGBA so palette transparency is handled without a warning
    return image.convert("RGB")


def _describe(value: Any) -> str:
    if isinstance(value, dict) and value.get("path"):
        return f"file {value['path']!r}"
    if isinstance(value, (str, os.PathLike)):
        return f"file {os.fspath(value)!r}"
    return "embedded bytes"


def decode_image(value: Any, index: int, split: str) -> Image.Image:
    """Open one image column value (`{"bytes", "path"}` from `datasets.Image(decode=False)`, a path, or a PIL
    image), apply its EXIF orientation and return it as RGB. Raises `BadImageError` naming `split` and `index`."""
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict) and value.get("bytes") is not None:
            image = Image.open(io.BytesIO(value["bytes"]))
        elif isinstance(value, dict) and value.get("path"):
            with open(value["path"], "rb") as handle:
                image = Image.open(io.BytesIO(handle.read()))
        elif isinstance(value, (str, os.PathLike)):
            with open(value, "rb") as handle:
                image = Image.open(io.BytesIO(handle.read()))
        elif value is None:
            raise ValueError("the image is missing (None)")
        else:
            raise TypeError(f"expected an image, a path or image bytes, got {type(value).__name__}")
        image.load()  # decodes everything now, so truncated files fail here and not inside a transform
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except Exception as error:  # any decoding failure: PIL raises OSError, SyntaxError, ValueError, ...
        reason = "not an image format PIL can read" if isinstance(error, UnidentifiedImageError) else str(error)
        raise BadImageError(
            f"Image {index} of split '{split}' ({_describe(value)}) cannot be read: {reason}. {SKIP_HINT}"
        ) from error
