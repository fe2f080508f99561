"""Reading dataset images: decoding with errors that name the row, conversion of every PIL mode to RGB, and
segmentation annotations (class-index maps) read as they are stored."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BadImageError, DataError

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


def _open(value: Any) -> Image.Image:
    """A fully decoded PIL image from a column value (PIL image, `{"bytes", "path"}` dict or path)."""
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
    return image


def _bad_image(error: Exception, what: str, value: Any, index: int, split: str) -> BadImageError:
    reason = "not an image format PIL can read" if isinstance(error, UnidentifiedImageError) else str(error)
    message = f"{what} {index} of split '{split}' ({_describe(value)}) cannot be read: {reason}. {SKIP_HINT}"
    return BadImageError(message)


def decode_image(value: Any, index: int, split: str) -> Image.Image:
    """Open one image column value (`{"bytes", "path"}` from `datasets.Image(decode=False)`, a path, or a PIL
    image), apply its EXIF orientation and return it as RGB. Raises `BadImageError` naming `split` and `index`."""
    try:
        return to_rgb(ImageOps.exif_transpose(_open(value)))
    except Exception as error:  # any decoding failure: PIL raises OSError, SyntaxError, ValueError, ...
        raise _bad_image(error, "Image", value, index, split) from error


def decode_annotation(value: Any, index: int, split: str) -> np.ndarray:
    """A segmentation annotation as a 2-D int64 array of the stored class indices: single-channel images (L, P
    (palette indices), I;16, I) or arrays. EXIF orientation is not applied, as mmsegmentation reads annotations
    ("unchanged"). Grey maps saved as RGB are accepted. Raises `BadImageError` for unreadable files and `DataError`
    for colour-coded maps."""
    if isinstance(value, (np.ndarray, list)):
        array = np.asarray(value)
    else:
        try:
            image = _open(value)
        except Exception as error:
            raise _bad_image(error, "Annotation", value, index, split) from error
        array = np.asarray(image)
        grey_as_rgb = image.mode == "RGB" and (array == array[..., :1]).all()
        if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1") and not grey_as_rgb:
            raise DataError(
                f"Annotation {index} of split '{split}' ({_describe(value)}) is a {image.mode} image; annotations "
                "must be single-channel maps of class indices (mode L, P, I or I;16), not colour-coded images. "
                "Convert the colours to class indices first."
            )
        if grey_as_rgb:  # class indices saved as grey RGB: the three channels are equal
            array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise DataError(
            f"Annotation {index} of split '{split}' has shape {array.shape}; expected a 2-D map of class indices."
        )
    return array.astype(np.int64)
