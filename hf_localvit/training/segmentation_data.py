"""Semantic segmentation data: image and annotation columns, class names, the ignore index and ADE20K's
`reduce_labels`, and the per-row checks that turn bad annotations into errors naming the split and row."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from ..metrics.mean_iou.mean_iou import reduce_zero_label  # the metric's `reduce_labels`, on arrays or tensors
from ..models.upernet_dwnet import ade20k_id2label
from .data import find_column, find_image_column, undecoded_images
from .errors import DataError
from .images import decode_annotation, decode_image


ANNOTATION_COLUMN_NAMES = (
    "annotation", "annotations", "segmentation_map", "segmentation", "semantic_map", "semantic_segmentation",
    "seg_map", "label", "labels", "mask", "masks", "label_map", "gt", "ground_truth", "target",
)  # fmt: skip
ID2LABEL_FILE = "id2label.json"  # the name Hub segmentation datasets (and this task) use for class names
# Hub ids of ADE20K (SceneParsing, 150 classes), whose class names are known without a file.
ADE20K_DATASET_PATTERN = re.compile(r"(^|/)(scene_parse_150|ade20k|ade20k[-_]150)$", re.IGNORECASE)
_ARRAY_FEATURES = tuple(getattr(datasets, name) for name in ("Array2D", "Sequence", "List") if hasattr(datasets, name))


def find_segmentation_columns(
    dataset: datasets.Dataset, image_column: str | None, annotation_column: str | None
) -> tuple[str, str]:
    """The image and annotation columns: as named, else detected. The annotation is the first column with a
    conventional name (`ANNOTATION_COLUMN_NAMES`), else the other image column."""
    columns = dataset.column_names
    named = annotation_column or next(
        (name for name in ANNOTATION_COLUMN_NAMES if name in columns and name != image_column), None
    )
    image = find_image_column(dataset, image_column, exclude=[named] if named else [])
    annotation = find_column(
        dataset,
        annotation_column,
        datasets.Image,
        ANNOTATION_COLUMN_NAMES,
        "annotation",
        "--annotation-column",
        exclude=[image],
        names_first=True,
    )
    if image == annotation:
        raise DataError(f"--image-column and --annotation-column are both {image!r}.")
    return image, annotation


def undecoded_annotations(dsd: datasets.DatasetDict) -> tuple[datasets.DatasetDict, bool]:
    """Leave the `annotation` column undecoded (see `undecoded_images`); arrays (Array2D, nested sequences) are
    kept. Returns the datasets and whether the annotations are image files."""
    feature = next(iter(dsd.values())).features["annotation"]
    if isinstance(feature, _ARRAY_FEATURES):
        return dsd, False
    return undecoded_images(dsd, "annotation", "--annotation-column"), True


def _names_from_json(data: Any, source: str) -> list[str]:
    """Class names from `{"0": "wall", ...}` (ids 0..N-1) or `["wall", ...]`."""
    if isinstance(data, list):
        return [str(name) for name in data]
    if isinstance(data, dict) and "id2label" in data:
        data = data["id2label"]
    if isinstance(data, dict):
        try:
            ids = {int(key): str(name) for key, name in data.items()}
        except ValueError:
            ids = None
        if ids is not None and sorted(ids) == list(range(len(ids))):
            return [ids[index] for index in range(len(ids))]
    raise DataError(
        f"{source} does not hold class names as {{\"0\": \"name\", \"1\": ...}} with ids 0..N-1, nor as a list of "
        "names."
    )


def read_id2label_file(path: str | Path) -> list[str]:
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"--id2label-file {str(path)!r} cannot be read as JSON: {error}") from error
    return _names_from_json(data, f"--id2label-file {str(path)!r}")


def dataset_label_names(name: str, hub_id: str | None, revision: str | None = None) -> tuple[list[str], str] | None:
    """Class names that come with the dataset: an `id2label.json` in its folder or Hub repository (read from the
    cache when offline), or ADE20K's for the Hub's ADE20K datasets. Returns the names and where they came from."""
    local = Path(name).expanduser() / ID2LABEL_FILE
    if hub_id is None:
        return (read_id2label_file(local), str(local)) if local.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(hub_id, ID2LABEL_FILE, repo_type="dataset", revision=revision)
    except Exception:  # no such file, offline without a cached copy, ...: other sources are tried
        path = None
    if path is not None:
        return read_id2label_file(path), f"{hub_id}/{ID2LABEL_FILE}"
    if ADE20K_DATASET_PATTERN.search(hub_id):
        return list(ade20k_id2label().values()), "the ADE20K class list"
    return None


def _max_labels(batch: dict[str, list], indices: list[int], split: str, ignore_index: int, reduce: bool) -> dict:
    maxima = []
    for value, index in zip(batch["annotation"], indices):
        annotation = decode_annotation(value, index, split)
        if reduce:
            annotation = reduce_zero_label(annotation, ignore_index)
        labelled = annotation[annotation != ignore_index]
        maxima.append(int(labelled.max()) if labelled.size else -1)
    return {"max_label": maxima}


def count_classes(
    splits: dict[str, datasets.Dataset], ignore_index: int, reduce_labels: bool, num_proc: int | None = None
) -> int:
    """Number of classes as the largest label in the annotations of `splits` plus one (reads every annotation)."""
    largest = -1
    for split, rows in splits.items():
        maxima = rows.map(
            _max_labels,
            fn_kwargs={"split": split, "ignore_index": ignore_index, "reduce": reduce_labels},
            with_indices=True,
            batched=True,
            batch_size=32,
            remove_columns=rows.column_names,
            keep_in_memory=True,  # no cache file next to the data (a save_to_disk folder is the user's)
            num_proc=num_proc if num_proc and num_proc > 1 and len(rows) > 256 else None,
            desc=f"Finding the classes of split '{split}' (--id2label-file skips this)",
        )
        largest = max([largest, *maxima["max_label"]])
    if largest < 1:
        raise DataError(
            f"The annotations hold {largest + 1} class(es) besides the ignore index {ignore_index}; segmentation needs "
            "at least 2. Check --ignore-index and --reduce-labels."
        )
    return largest + 1


class SegmentationExample:
    """Row -> {"pixel_values", "labels"}: decode image and annotation (errors name the row), check that they match
    and that every label is a class or the ignore index, reduce the labels if asked, transform both together."""

    def __init__(self, transform: Any, split: str, num_labels: int, ignore_index: int, reduce_labels: bool) -> None:
        self.transform = transform
        self.split = split
        self.num_labels = num_labels
        self.ignore_index = ignore_index
        self.reduce_labels = reduce_labels

    def labels(self, row: dict[str, Any], index: int, image_size: tuple[int, int] | None = None) -> np.ndarray:
        """The row's annotation as checked class indices (after `reduce_labels`)."""
        annotation = decode_annotation(row["annotation"], index, self.split)
        if image_size is not None and annotation.shape != image_size:
            raise DataError(
                f"Row {index} of split '{self.split}': the annotation is {annotation.shape[1]}x{annotation.shape[0]} "
                f"pixels but the image is {image_size[1]}x{image_size[0]} (width x height). Each annotation must be "
                "the size of its image."
            )
        if self.reduce_labels:
            annotation = reduce_zero_label(annotation, self.ignore_index)
        bad = ((annotation < 0) | (annotation >= self.num_labels)) & (annotation != self.ignore_index)
        if bad.any():
            values = np.unique(annotation[bad])
            shown = ", ".join(str(v) for v in values[:10]) + (", ..." if len(values) > 10 else "")
            reduced = " after --reduce-labels" if self.reduce_labels else ""
            hint = "" if self.reduce_labels else " If 0 means 'unlabelled' (as in ADE20K), pass --reduce-labels."
            raise DataError(
                f"Row {index} of split '{self.split}' has label(s) {shown}{reduced}, outside the classes "
                f"0..{self.num_labels - 1} and not the ignore index {self.ignore_index}. Give all class names with "
                f"--id2label-file, or set --ignore-index to the value of unlabelled pixels.{hint}"
            )
        return annotation

    def __call__(self, row: dict[str, Any], index: int) -> dict[str, Any]:
        image = decode_image(row["image"], index, self.split)
        annotation = self.labels(row, index, (image.height, image.width))
        pixel_values, labels = self.transform(image, annotation)
        return {"pixel_values": pixel_values, "labels": labels}


def collate_segmentation(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack what has one size (training crops); keep lists where sizes differ (evaluation at original sizes)."""
    batch: dict[str, Any] = {}
    for key in examples[0]:
        values = [example[key] for example in examples]
        same = all(value.shape == values[0].shape for value in values)
        batch[key] = torch.stack(values) if same else values
    return batch


__all__ = [
    "ANNOTATION_COLUMN_NAMES",
    "SegmentationExample",
    "collate_segmentation",
    "count_classes",
    "dataset_label_names",
    "find_segmentation_columns",
    "read_id2label_file",
    "undecoded_annotations",
]
