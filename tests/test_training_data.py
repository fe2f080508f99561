"""Dataset adapters of the fine-tuning entry point: loading, splits, columns, image decoding and transforms."""

import io

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTImageProcessor

from hf_localvit import dwnet_image_processor
from hf_localvit.training.data import (
    ExampleDataset,
    drop_unreadable_images,
    find_image_column,
    load_dataset_dict,
    select_splits,
    undecoded_images,
)
from hf_localvit.training.digits import digits_dataset
from hf_localvit.training.errors import BadImageError, DataError
from hf_localvit.training.images import decode_image, to_rgb
from hf_localvit.training.testing import SHAPE_CLASSES, shapes_dataset, write_image_folder
from hf_localvit.training.transforms import classification_train_transform, eval_transform


@pytest.fixture(autouse=True)
def _offline_and_private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))


def _png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "PA", "CMYK", "I;16", "I", "F", "1", "YCbCr"])
def test_every_mode_becomes_rgb(mode):
    image = Image.new(mode, (6, 4))
    assert to_rgb(image).mode == "RGB"
    assert to_rgb(image).size == (6, 4)


def test_sixteen_bit_greys_are_scaled_not_clipped():
    grey = Image.fromarray(np.full((2, 2), 32768, dtype=np.uint16))  # mid-grey in 16 bits
    assert to_rgb(grey).getpixel((0, 0)) == (128, 128, 128)


def test_palette_with_transparency_and_cmyk_decode_from_bytes():
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.info["transparency"] = 0
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red
    for value in (_png_bytes(palette), _png_bytes(cmyk, "JPEG")):
        image = decode_image({"bytes": value, "path": None}, 0, "train")
        assert image.mode == "RGB"
        red, green, blue = image.getpixel((4, 4))
        assert red > 200 and green < 60 and blue < 60


def test_truncated_and_garbage_images_name_their_index(tmp_path):
    good = _png_bytes(Image.new("RGB", (40, 40), (10, 200, 30)))
    with pytest.raises(BadImageError, match=r"Image 7 of split 'train' \(embedded bytes\).*truncated.*--skip-bad"):
        decode_image({"bytes": good[: len(good) // 2], "path": None}, 7, "train")
    path = tmp_path / "not-an-image.jpg"
    path.write_bytes(b"garbage")
    with pytest.raises(BadImageError, match=r"Image 3 of split 'validation' \(file .*not-an-image.jpg'\)"):
        decode_image(str(path), 3, "validation")
    with pytest.raises(BadImageError, match="missing"):
        decode_image(None, 0, "train")


def test_skip_bad_images_reports_and_drops_them(caplog):
    good = _png_bytes(Image.new("RGB", (8, 8)))
    rows = datasets.Dataset.from_dict(
        {"image": [{"bytes": good, "path": None}, {"bytes": b"bad", "path": None}, {"bytes": good[:30], "path": None}]}
    )
    with caplog.at_level("WARNING"):
        kept = drop_unreadable_images(rows, "image", "train")
    assert len(kept) == 1
    assert "Skipping 2 unreadable image(s) of split 'train': #1:" in caplog.text and "#2:" in caplog.text


def test_image_folder_with_splits_and_class_names(tmp_path):
    write_image_folder(tmp_path / "shapes", train_per_class=2, validation_per_class=1)
    dsd = load_dataset_dict(str(tmp_path / "shapes"))
    assert set(dsd) == {"train", "validation"}
    assert dsd["train"].features["label"].names == sorted(SHAPE_CLASSES)
    assert find_image_column(dsd["train"], None) == "image"


def test_save_to_disk_folder_and_column_detection(tmp_path):
    shapes_dataset(train_rows=6, validation_rows=3).save_to_disk(tmp_path / "saved")
    dsd = load_dataset_dict(str(tmp_path / "saved"))
    assert find_image_column(dsd["train"], None) == "img"
    with pytest.raises(DataError, match="no image column 'picture'. Its columns are: img, shape"):
        find_image_column(dsd["train"], "picture")


def test_missing_dataset_folder_and_file(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_dataset_dict(str(tmp_path / "nowhere"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        load_dataset_dict(str(tmp_path / "file.txt"))


def _labelled(rows: int) -> datasets.Dataset:
    features = datasets.Features({"label": datasets.ClassLabel(names=["a", "b"])})
    return datasets.Dataset.from_dict({"label": [index % 2 for index in range(rows)]}, features=features)


def test_validation_split_is_used_or_carved_with_the_seed():
    given = select_splits(datasets.DatasetDict({"train": _labelled(20), "valid": _labelled(4)}), "train", None, 0.1, 0)
    assert (len(given.train), len(given.validation), given.validation_split) == (20, 4, "valid")
    dsd = datasets.DatasetDict({"train": _labelled(40), "test": _labelled(6)})
    first = select_splits(dsd, "train", None, 0.25, seed=3, stratify_by_column="label")
    again = select_splits(dsd, "train", None, 0.25, seed=3, stratify_by_column="label")
    assert (len(first.train), len(first.validation)) == (30, 10)
    assert first.validation["label"] == again.validation["label"]
    assert sorted(first.validation["label"]) == [0] * 5 + [1] * 5
    assert "carved off with seed 3 (stratified by label)" in first.validation_description
    assert first.test is not None and len(first.test) == 6  # test is held out, not used for validation


def test_split_errors_say_what_there_is():
    dsd = datasets.DatasetDict({"train": _labelled(4), "validation": _labelled(0)})
    with pytest.raises(DataError, match="Split 'validation' is empty"):
        select_splits(dsd, "train", None, 0.1, 0)
    with pytest.raises(DataError, match="no split 'training'. Its splits are: train, validation"):
        select_splits(dsd, "training", None, 0.1, 0)
    with pytest.raises(DataError, match="Split 'train' is empty"):
        select_splits(datasets.DatasetDict({"train": _labelled(0)}), "train", None, 0.1, 0)


def test_undecoded_images_rejects_non_image_columns():
    dsd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"x": [1, 2]})})
    with pytest.raises(DataError, match="not images"):
        undecoded_images(dsd, "x")


@pytest.mark.parametrize(
    "processor",
    [
        dwnet_image_processor(224),
        dwnet_image_processor(32, crop_pct=1.0),
        dwnet_image_processor(384),
        ViTImageProcessor(size={"height": 40, "width": 48}),
    ],
    ids=["dwnet-224", "dwnet-32", "dwnet-384", "vit"],
)
def test_eval_transform_equals_the_image_processor(processor):
    transform = eval_transform(processor)
    rng = np.random.default_rng(0)
    for height, width in [(300, 400), (257, 255), (31, 77), (8, 8)]:
        image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(transform(image), expected, atol=1e-5, rtol=0)


def test_train_transform_is_reproducible_per_sample_seed():
    processor = dwnet_image_processor(32)
    transform = classification_train_transform(processor, auto_augment="trivial", random_erasing=0.5)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    rows = datasets.Dataset.from_dict({"n": [0, 1]})
    dataset = ExampleDataset(rows, lambda row, index: transform(image), seed=5)
    first, second = dataset[0], dataset[1]
    torch.manual_seed(123)  # the global RNG does not matter
    assert torch.equal(dataset[0], first) and not torch.equal(first, second)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0], first)
    assert first.shape == (3, 32, 32)


def test_digits_default_dataset():
    dsd = digits_dataset()
    assert {split: len(rows) for split, rows in dsd.items()} == {"train": 1437, "validation": 180, "test": 180}
    assert dsd["train"].features["label"].names == [str(digit) for digit in range(10)]
    image = dsd["test"][0]["image"]
    assert image.mode == "RGB" and image.size == (32, 32)
