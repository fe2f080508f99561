"""Dataset loading shared by all tasks: Hub id, local `imagefolder` directory or `save_to_disk` folder; split
handling; column detection; bad-image scanning; and the seeded torch `Dataset` the trainer iterates over."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch

from .errors import BadImageError, DataError
from .images import SKIP_HINT, decode_image
from .seeding import seeded_cpu_rng

logger = logging.getLogger(__name__)

VALIDATION_SPLIT_NAMES = ("validation", "valid", "val", "dev")
IMAGE_COLUMN_NAMES = ("image", "img", "images", "picture", "photo", "image_path", "file", "path", "filepath")


@dataclass
class SplitSelection:
    """The splits a run uses and how they were obtained (for logs and the model card)."""

    train: datasets.Dataset
    validation: datasets.Dataset
    test: datasets.Dataset | None
    train_split: str
    validation_split: str
    validation_description: str


@dataclass
class DatasetSource:
    """A loaded `--dataset` and how to name it (logs, results and the model card)."""

    dataset: datasets.DatasetDict
    name: str  # as given
    hub_id: str | None  # None for local folders
    kind: str  # the Hub id, "imagefolder" or "save_to_disk"


def is_saved_to_disk(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


def load_dataset_dict(
    dataset: str, config_name: str | None = None, revision: str | None = None
) -> datasets.DatasetDict:
    """Load `dataset` as a `DatasetDict`: a `save_to_disk` folder, a local image folder (`imagefolder`: one
    sub-folder per class, optionally under train/validation/test folders) or a Hub dataset id."""
    path = Path(dataset).expanduser()
    try:
        if path.is_dir():
            if is_saved_to_disk(path):
                loaded = datasets.load_from_disk(str(path))
            else:
                loaded = datasets.load_dataset("imagefolder", data_dir=str(path))
        elif path.exists():
            raise DataError(
                f"--dataset {dataset!r} is a file. Give a folder of images (one sub-folder per class), a folder "
                "written by Dataset.save_to_disk, or a Hub dataset id."
            )
        elif dataset.startswith((".", "/", "~")) or dataset.count("/") > 1:
            raise DataError(
                f"--dataset {dataset!r}: no such folder. Give an existing folder or a Hub dataset id like "
                "'user/name'."
            )
        else:
            loaded = datasets.load_dataset(dataset, config_name, revision=revision)
    except DataError:
        raise
    except Exception as error:
        if path.is_dir():
            hint = (
                " Give a folder of images with one sub-folder per class (optionally inside train/validation/test "
                "folders), or a folder written by save_to_disk; datasets cannot read back a saved empty split."
            )
        elif datasets.config.HF_HUB_OFFLINE:
            hint = " The Hub is offline (HF_HUB_OFFLINE=1): only datasets already in the cache can be loaded."
        else:
            hint = (
                " Check the name (and --dataset-config for datasets with several configurations), your network "
                "and, for gated datasets, `hf auth login`."
            )
        raise DataError(f"Could not load dataset {dataset!r}: {error}.{hint}") from error
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    if not isinstance(loaded, datasets.DatasetDict):
        raise DataError(
            f"Dataset {dataset!r} loaded as {type(loaded).__name__}; only map-style datasets (not streaming "
            "IterableDataset) are supported."
        )
    return loaded


def load_dataset_source(
    dataset: str, config_name: str | None = None, revision: str | None = None
) -> DatasetSource:
    """`load_dataset_dict`, plus the names the model card gives the data."""
    dsd = load_dataset_dict(dataset, config_name, revision)
    path = Path(dataset).expanduser()
    if path.exists():
        return DatasetSource(dsd, dataset, None, "save_to_disk" if is_saved_to_disk(path) else "imagefolder")
    return DatasetSource(dsd, dataset, dataset, dataset)


def find_column(
    dataset: datasets.Dataset,
    requested: str | None,
    feature_type: type,
    names: Sequence[str],
    what: str,
    flag: str,
    exclude: Collection[str] = (),
    names_first: bool = False,
) -> str:
    """The column named `requested`, else the first column of `feature_type`, else the first of `names` (with
    `names_first`, the names are tried before the type); columns in `exclude` are never detected."""
    columns = list(dataset.column_names)
    if requested:
        if requested not in columns:
            raise DataError(f"The dataset has no {what} column {requested!r}. Its columns are: {', '.join(columns)}.")
        return requested
    by_type = [column for column, feature in dataset.features.items() if isinstance(feature, feature_type)]
    by_name = [name for name in names if name in columns]
    for column in (by_name + by_type) if names_first else (by_type + by_name):
        if column not in exclude:
            return column
    raise DataError(
        f"Could not find the {what} column. The dataset's columns are: {', '.join(columns)}. "
        f"Name the right one with {flag} COLUMN."
    )


def find_image_column(dataset: datasets.Dataset, requested: str | None, exclude: Collection[str] = ()) -> str:
    return find_column(dataset, requested, datasets.Image, IMAGE_COLUMN_NAMES, "image", "--image-column", exclude)


def undecoded_images(dsd: datasets.DatasetDict, column: str, flag: str = "--image-column") -> datasets.DatasetDict:
    """Cast the image column to `Image(decode=False)`, so rows hold bytes/paths and decoding (and its errors)
    happen in `decode_image`, which names the offending row."""
    feature = next(iter(dsd.values())).features[column]
    if isinstance(feature, datasets.Image):
        return dsd.cast_column(column, datasets.Image(decode=False))
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return dsd  # paths to image files
    raise DataError(
        f"Column {column!r} holds {feature}, not images. Point {flag} at a column of images or image paths."
    )


def select_splits(
    dsd: datasets.DatasetDict,
    train_split: str,
    validation_split: str | None,
    validation_fraction: float,
    seed: int,
    stratify_by_column: str | None = None,
) -> SplitSelection:
    """Use `train_split` and the given (or a conventionally named) validation split; without one, carve
    `validation_fraction` off the training split with `seed` (stratified when possible)."""
    available = list(dsd.keys())
    if train_split not in dsd:
        if train_split == "train" and len(available) == 1:
            train_split = available[0]
        else:
            raise DataError(
                f"The dataset has no split {train_split!r}. Its splits are: {', '.join(available)}. "
                "Choose one with --train-split."
            )
    if validation_split is not None and validation_split not in dsd:
        raise DataError(
            f"The dataset has no split {validation_split!r}. Its splits are: {', '.join(available)}. Leave "
            "--validation-split out to carve a validation set off the training split."
        )
    if validation_split is None:
        validation_split = next(
            (name for name in VALIDATION_SPLIT_NAMES if name in dsd and name != train_split), None
        )
    train = dsd[train_split]
    check_not_empty(train, train_split)
    if validation_split is not None:
        validation = dsd[validation_split]
        description = f"split '{validation_split}'"
    else:
        if not 0.0 < validation_fraction < 1.0:
            raise DataError(
                f"The dataset has no validation split and --validation-fraction is {validation_fraction}; use a "
                "fraction in (0, 1) or name a split with --validation-split."
            )
        if len(train) < 2:
            raise DataError(
                f"Split '{train_split}' has {len(train)} row(s): too few to carve a validation set off. Add data "
                "or give a validation split."
            )
        try:
            parts = train.train_test_split(
                test_size=validation_fraction, seed=seed, stratify_by_column=stratify_by_column
            )
            stratified = stratify_by_column is not None
        except ValueError:  # e.g. classes with a single example, or fewer validation rows than classes
            parts = train.train_test_split(test_size=validation_fraction, seed=seed)
            stratified = False
        train, validation = parts["train"], parts["test"]
        description = (
            f"{validation_fraction:g} of split '{train_split}' carved off with seed {seed}"
            + (" (stratified by label)" if stratified else "")
        )
    check_not_empty(validation, validation_split or "validation (carved off)")
    test_name = "test" if "test" in dsd and validation_split != "test" and train_split != "test" else None
    test = dsd[test_name] if test_name else None
    return SplitSelection(train, validation, test, train_split, validation_split or "validation", description)


def prepare_splits(
    dsd: datasets.DatasetDict,
    args: argparse.Namespace,
    image_columns: Sequence[str] = ("image",),
    stratify_by_column: str | None = None,
) -> SplitSelection:
    """The splits of a run from the common options: `select_splits`, then the seeded `--max-train-samples` /
    `--max-eval-samples` subsets, then (`--skip-bad-images`) without the rows whose `image_columns` cannot be read."""
    splits = select_splits(
        dsd, args.train_split, args.validation_split, args.validation_fraction, args.seed, stratify_by_column
    )
    train = seeded_subset(splits.train, args.max_train_samples, args.seed)
    validation = seeded_subset(splits.validation, args.max_eval_samples, args.seed)
    if args.skip_bad_images:
        for column in image_columns:
            train = drop_unreadable_images(train, column, splits.train_split, args.num_workers)
            validation = drop_unreadable_images(validation, column, splits.validation_split, args.num_workers)
    check_not_empty(train, splits.train_split)
    check_not_empty(validation, splits.validation_split)
    return dataclasses.replace(splits, train=train, validation=validation)


def seeded_subset(dataset: datasets.Dataset, max_rows: int | None, seed: int) -> datasets.Dataset:
    """`max_rows` rows drawn at random with `seed` (all of them when `max_rows` is None or not smaller)."""
    if max_rows is None or max_rows >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(max_rows))


def check_not_empty(dataset: datasets.Dataset, split: str) -> None:
    if len(dataset) == 0:
        raise DataError(f"Split '{split}' is empty (0 rows). Check the dataset, --train-split and --validation-split.")


def limit_rows(dataset: datasets.Dataset, max_rows: int | None) -> datasets.Dataset:
    if max_rows is not None and max_rows < len(dataset):
        return dataset.select(range(max_rows))
    return dataset


def _scan_batch(batch: dict[str, list], indices: list[int], column: str, split: str) -> dict[str, list]:
    bad_indices, errors = [], []
    for value, index in zip(batch[column], indices):
        try:
            decode_image(value, index, split)
        except BadImageError as error:
            bad_indices.append(index)
            errors.append(str(error).replace(f" {SKIP_HINT}", ""))
    return {"bad_index": bad_indices, "error": errors}


def drop_unreadable_images(
    dataset: datasets.Dataset, column: str, split: str, num_proc: int | None = None
) -> datasets.Dataset:
    """Decode every image once; log each unreadable one with its index and return the dataset without them."""
    report = dataset.map(
        _scan_batch,
        fn_kwargs={"column": column, "split": split},
        with_indices=True,
        batched=True,
        batch_size=64,
        remove_columns=dataset.column_names,
        num_proc=num_proc if num_proc and num_proc > 1 and len(dataset) > 256 else None,
        keep_in_memory=True,  # a scan report: no cache files next to the user's dataset
        desc=f"Checking the images of split '{split}'",
    )
    if len(report) == 0:
        return dataset
    bad = dict(zip(report["bad_index"], report["error"]))
    shown = "; ".join(f"#{index}: {error}" for index, error in list(bad.items())[:20])
    more = f" (and {len(bad) - 20} more)" if len(bad) > 20 else ""
    logger.warning(f"Skipping {len(bad)} unreadable image(s) of split '{split}': {shown}{more}")
    kept = dataset.select([index for index in range(len(dataset)) if index not in bad])
    check_not_empty(kept, f"{split} (after skipping unreadable images)")
    return kept


class ExampleDataset(torch.utils.data.Dataset):
    """A map-style dataset of rows turned into model inputs by `prepare(row, index)`; with `seed` set, each
    example's random augmentation is seeded by (seed, epoch, index), independent of workers, processes and
    resumption."""

    def __init__(
        self,
        rows: datasets.Dataset,
        prepare: Callable[[dict[str, Any], int], dict[str, Any]],
        seed: int | None = None,
    ) -> None:
        self.rows = rows
        self.prepare = prepare
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[int(index)]
        if self.seed is None:
            return self.prepare(row, int(index))
        with seeded_cpu_rng(self.seed, self.epoch, int(index)):
            return self.prepare(row, int(index))
