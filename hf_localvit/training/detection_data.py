"""COCO-style detection data (the Hub's layout: an `image` column and an `objects` column of per-object `bbox`,
`category` and optionally `segmentation`, `area`, `iscrowd`): finding the fields, category names, box conversion
and checks, instance masks as COCO RLE, and the per-split scan that names bad rows and finds images without objects.

Filtering (mmdetection's `CocoDataset` rules, each logged with counts): boxes under one pixel wide or high are
dropped; boxes partly outside the image are clipped to it, and those left under one pixel are dropped. Crowd objects
(`iscrowd` 1) are not trained on and count as crowd regions in the COCO evaluation. Errors: a category id outside
the category names, or a malformed box, stops the run naming the split and row.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from ..models.cascade_mask_rcnn.losses_cascade_mask_rcnn import MIN_GT_BOX_SIDE
from .errors import DataError
from .images import decode_image

logger = logging.getLogger(__name__)

OBJECTS_COLUMN_NAMES = ("objects", "annotations", "annotation", "instances")
BOX_FIELD_NAMES = ("bbox", "bboxes", "boxes", "box")
CATEGORY_FIELD_NAMES = ("category", "category_id", "categories", "label", "labels", "class")
SEGMENTATION_FIELD_NAMES = ("segmentation", "segmentations", "mask", "masks")
BOX_FORMATS = ("xywh", "xyxy")


@dataclass(frozen=True)
class ObjectFields:
    """Where the annotations are: the objects column and the names of its per-object fields (None: absent)."""

    column: str
    bbox: str
    category: str
    segmentation: str | None = None
    area: str | None = None
    iscrowd: str | None = None


def object_features(feature: Any) -> dict[str, Any]:
    """Per-object field features of an objects column: `Sequence({...})` (a dict of lists in datasets >= 4, a
    `Sequence` with a dict feature before) or `List({...})` (a list of dicts)."""
    if isinstance(feature, dict):
        return {name: getattr(sub, "feature", sub) for name, sub in feature.items()}
    inner = getattr(feature, "feature", None)
    return dict(inner) if isinstance(inner, dict) else {}


def find_object_fields(dataset: datasets.Dataset, requested: str | None, use_masks: bool = True) -> ObjectFields:
    """The objects column (`requested`, else the first of the usual names, else a struct column with boxes) and its
    box, category and optional segmentation/area/iscrowd fields."""
    columns = list(dataset.column_names)
    if requested:
        if requested not in columns:
            raise DataError(f"The dataset has no objects column {requested!r}. Its columns are: {', '.join(columns)}.")
        candidates = [requested]
    else:
        with_boxes = [c for c, f in dataset.features.items() if set(object_features(f)) & set(BOX_FIELD_NAMES)]
        candidates = [name for name in OBJECTS_COLUMN_NAMES if name in with_boxes] + with_boxes
    if not candidates:
        raise DataError(
            "Could not find the objects column (per image, a list of objects with 'bbox' and 'category'). The "
            f"dataset's columns are: {', '.join(columns)}. Name the right one with --objects-column COLUMN."
        )
    column = candidates[0]
    fields = object_features(dataset.features[column])

    def pick(names: Sequence[str], what: str | None) -> str | None:
        found = next((name for name in names if name in fields), None)
        if found is None and what is not None:
            raise DataError(
                f"The objects column {column!r} has no {what} field (looked for {', '.join(names)}); its fields are: "
                f"{', '.join(fields) or 'none'}. Detection needs per-object 'bbox' and 'category'."
            )
        return found

    return ObjectFields(
        column=column,
        bbox=pick(BOX_FIELD_NAMES, "box"),
        category=pick(CATEGORY_FIELD_NAMES, "category"),
        segmentation=pick(SEGMENTATION_FIELD_NAMES, None) if use_masks else None,
        area=pick(("area",), None),
        iscrowd=pick(("iscrowd", "is_crowd"), None),
    )


def as_object_columns(objects: Any) -> dict[str, list]:
    """One row's objects as a dict of per-object lists, whether stored as a dict of lists or a list of dicts."""
    if objects is None:
        return {}
    if isinstance(objects, dict):
        return objects
    if isinstance(objects, (list, tuple)):
        names = {name for item in objects for name in item}
        return {name: [item.get(name) for item in objects] for name in names}
    raise DataError(f"Expected the objects of an image as a list of objects or a dict of lists, got {type(objects)}.")


@dataclass
class Categories:
    """Category names, and how stored values map to class indices (identity for integer ids)."""

    names: list[str]
    index_of: dict[str, int] | None = None  # string categories

    def encode(self, value: Any, split: str, row: int) -> int:
        index = self.index_of.get(value) if self.index_of is not None else value
        if index is None or isinstance(index, (bool, float)) or not 0 <= int(index) < len(self.names):
            raise DataError(
                f"Row {row} of split '{split}' has an object of category {value!r}, outside the "
                f"{len(self.names)} categories (0..{len(self.names) - 1}: {', '.join(self.names[:10])}"
                f"{', ...' if len(self.names) > 10 else ''}). Fix the annotation, or give the category feature the "
                "full list of names (datasets.ClassLabel)."
            )
        return int(index)


def find_categories(dsd: datasets.DatasetDict, fields: ObjectFields) -> Categories:
    """Names from the ClassLabel of the category field; else integer ids numbered 0..max (over all splits), or
    string categories sorted by name."""
    reference = next(iter(dsd.values()))
    feature = object_features(reference.features[fields.column]).get(fields.category)
    if isinstance(feature, datasets.ClassLabel):
        return Categories(list(feature.names))
    values = set()
    for rows in dsd.values():
        for objects in rows.select_columns([fields.column])[fields.column]:
            values.update(value for value in as_object_columns(objects).get(fields.category) or [] if value is not None)
    if not values:
        raise DataError(f"No split has any object in column {fields.column!r}: nothing to train a detector on.")
    if all(isinstance(value, str) for value in values):
        names = sorted(values)
        return Categories(names, {name: index for index, name in enumerate(names)})
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        raise DataError(
            f"The categories of {fields.column!r} are {sorted(map(repr, values))[:5]}...; give integer ids, names "
            "or a datasets.ClassLabel."
        )
    return Categories([str(index) for index in range(max(values) + 1)])


@dataclass
class Annotations:
    """One image's usable objects: (n, 4) x1y1x2y2 pixel boxes inside the image, class indices, crowd flags, the
    dataset's areas (if given) and raw segmentations (if used), plus what was filtered."""

    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    area: np.ndarray | None
    segmentations: list | None
    degenerate: int = 0  # dropped: under one pixel wide or high
    outside: int = 0  # dropped: under one pixel inside the image after clipping
    clipped: int = 0  # kept, clipped to the image

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def parse_annotations(
    objects: Any,
    width: int,
    height: int,
    fields: ObjectFields,
    categories: Categories,
    box_format: str,
    split: str,
    row: int,
) -> Annotations:
    """Convert, check and filter one image's objects (see the module docstring for the rules)."""
    columns = as_object_columns(objects)
    raw_boxes = list(columns.get(fields.bbox) or [])
    raw_categories = list(columns.get(fields.category) or [])
    if len(raw_boxes) != len(raw_categories):
        raise DataError(
            f"Row {row} of split '{split}' has {len(raw_boxes)} boxes but {len(raw_categories)} categories; give "
            "one category per box."
        )
    labels = np.asarray([categories.encode(value, split, row) for value in raw_categories], dtype=np.int64)
    boxes = np.zeros((len(raw_boxes), 4), dtype=np.float64)
    for k, box in enumerate(raw_boxes):
        values = list(box) if box is not None else []
        if len(values) != 4 or not all(v is not None and math.isfinite(float(v)) for v in values):
            raise DataError(
                f"Row {row} of split '{split}': object {k} has box {box!r}; expected 4 finite numbers "
                f"({'x, y, width, height' if box_format == 'xywh' else 'x1, y1, x2, y2'} in pixels, --box-format)."
            )
        boxes[k] = values
    if box_format == "xywh":
        boxes[:, 2:] += boxes[:, :2]
    degenerate = ((boxes[:, 2] - boxes[:, 0]) < MIN_GT_BOX_SIDE) | ((boxes[:, 3] - boxes[:, 1]) < MIN_GT_BOX_SIDE)
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    small = ((clipped[:, 2] - clipped[:, 0]) < MIN_GT_BOX_SIDE) | ((clipped[:, 3] - clipped[:, 1]) < MIN_GT_BOX_SIDE)
    outside = small & ~degenerate
    keep = ~(degenerate | outside)
    was_clipped = keep & (clipped != boxes).any(axis=1)

    def kept(name: str | None) -> list | None:
        if name is None:
            return None
        values = list(columns.get(name) or [])
        return [value for value, ok in zip(values, keep) if ok] if len(values) == len(keep) else None

    crowd = kept(fields.iscrowd)
    area = kept(fields.area)
    return Annotations(
        boxes=clipped[keep].astype(np.float32),
        labels=labels[keep],
        iscrowd=np.asarray([bool(v) for v in crowd], dtype=bool) if crowd is not None else np.zeros(keep.sum(), bool),
        area=np.asarray(area, dtype=np.float64) if area is not None and None not in area else None,
        segmentations=kept(fields.segmentation),
        degenerate=int(degenerate.sum()),
        outside=int(outside.sum()),
        clipped=int(was_clipped.sum()),
    )


# ------------------------------------------------------------------------------------------------ instance masks
def segmentation_to_rle(segmentation: Any, box: np.ndarray, height: int, width: int) -> dict[str, Any]:
    """One object's segmentation as COCO RLE (`counts` a str) at `height` x `width`: polygons (a list of flat
    x, y lists, or one flat list), RLE (compressed or uncompressed `{"size", "counts"}`) or a 2-D mask (array or PIL
    image). An empty segmentation becomes the filled box, so every object has a mask. An RLE or mask of another
    size than its image is an error: stretching it would misplace the object silently."""
    if isinstance(segmentation, dict) and "counts" in segmentation:
        size = [int(v) for v in segmentation.get("size") or (height, width)]
        counts = segmentation["counts"]
        if isinstance(counts, list):
            rle = mask_utils.frPyObjects({"size": size, "counts": counts}, *size)
        elif isinstance(counts, (str, bytes)):
            rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        else:
            raise ValueError(f"RLE counts must be a list of run lengths or a compressed string, got {counts!r}")
        _check_mask_size(tuple(size), height, width)
    elif isinstance(segmentation, (np.ndarray, Image.Image)):
        binary = np.asarray(segmentation) > 0
        if binary.ndim != 2:
            raise ValueError(f"an instance mask must be 2-D, got shape {binary.shape}")
        _check_mask_size(binary.shape, height, width)
        rle = _encode(binary)
    else:
        segmentation = list(segmentation or [])
        if segmentation and all(isinstance(value, (int, float)) for value in segmentation):
            segmentation = [segmentation]  # one flat polygon
        polygons = [[float(v) for v in polygon] for polygon in segmentation if polygon is not None and len(polygon) >= 6]
        if not polygons:
            x1, y1, x2, y2 = (float(v) for v in box)
            polygons = [[x1, y1, x2, y1, x2, y2, x1, y2]]
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return {"size": [int(v) for v in rle["size"]], "counts": _text(rle["counts"])}


def _encode(binary: np.ndarray) -> dict[str, Any]:
    return mask_utils.encode(np.asfortranarray(binary.astype(np.uint8)))


def _text(counts: Any) -> str:
    return counts.decode("ascii") if isinstance(counts, bytes) else counts


def _check_mask_size(size: tuple[int, ...], height: int, width: int) -> None:
    if tuple(size) != (height, width):
        raise ValueError(
            f"the mask is {size[1]}x{size[0]} pixels but the image is {width}x{height} (width x height); each mask "
            "must be the size of its image"
        )


def decode_rles(rles: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """(n, height, width) uint8 masks from COCO RLEs."""
    if not rles:
        return np.zeros((0, height, width), dtype=np.uint8)
    encoded = [{"size": rle["size"], "counts": rle["counts"].encode("ascii")} for rle in rles]
    with warnings.catch_warnings():  # pycocotools' NumPy 2 `copy=False` deprecation, once per call
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.ascontiguousarray(mask_utils.decode(encoded).transpose(2, 0, 1))


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """COCO RLEs (str counts) of (n, height, width) binary masks."""
    if masks.shape[0] == 0:
        return []
    encoded = _encode(masks.transpose(1, 2, 0))
    return [{"size": [int(v) for v in rle["size"]], "counts": _text(rle["counts"])} for rle in encoded]


# ---------------------------------------------------------------------------------------------------- the scan
@dataclass
class ScanReport:
    """Per-row usable object counts of one split, and what was filtered in it."""

    split: str
    objects: list[int] = field(default_factory=list)
    degenerate: int = 0
    outside: int = 0
    clipped: int = 0
    crowd: int = 0

    @property
    def empty_rows(self) -> list[int]:
        return [row for row, count in enumerate(self.objects) if count == 0]

    def log(self) -> None:
        parts = []
        if self.clipped:
            parts.append(f"clipped {self.clipped} box(es) partly outside their image")
        if self.degenerate:
            parts.append(f"dropped {self.degenerate} box(es) under {MIN_GT_BOX_SIDE:g} pixel wide or high")
        if self.outside:
            parts.append(f"dropped {self.outside} box(es) outside their image")
        if parts:
            logger.warning(f"Split '{self.split}': " + "; ".join(parts) + ".")


def scan_annotations(
    rows: datasets.Dataset,
    fields: ObjectFields,
    categories: Categories,
    box_format: str,
    split: str,
    batch_size: int = 256,
) -> ScanReport:
    """Check every row's objects once (category range, box shape) without decoding images when the dataset has
    `width` and `height` columns (else each image is decoded once for its size); count usable (non-crowd) objects."""
    sized = "width" in rows.column_names and "height" in rows.column_names
    columns = [fields.column, *(("width", "height") if sized else ())]
    report = ScanReport(split)
    row = 0
    for batch in rows.select_columns(columns).iter(batch_size=batch_size):
        for k, objects in enumerate(batch[fields.column]):
            if sized and batch["width"][k] and batch["height"][k]:
                width, height = int(batch["width"][k]), int(batch["height"][k])
            else:
                width, height = decode_image(rows[row]["image"], row, split).size
            parsed = parse_annotations(objects, width, height, fields, categories, box_format, split, row)
            report.objects.append(int((~parsed.iscrowd).sum()))
            report.degenerate += parsed.degenerate
            report.outside += parsed.outside
            report.clipped += parsed.clipped
            report.crowd += int(parsed.iscrowd.sum())
            row += 1
    return report


def drop_rows_without_objects(rows: datasets.Dataset, report: ScanReport) -> datasets.Dataset:
    """Training rows with at least one usable object (mmdetection's `filter_empty_gt`); the count is logged."""
    empty = set(report.empty_rows)
    if not empty:
        return rows
    shown = ", ".join(str(row) for row in sorted(empty)[:20]) + (" ..." if len(empty) > 20 else "")
    logger.warning(
        f"Leaving {len(empty)} image(s) without usable objects out of training split '{report.split}' (rows {shown}); "
        "they stay in evaluation."
    )
    return rows.select([row for row in range(len(rows)) if row not in empty])
