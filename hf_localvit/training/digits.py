"""The default, offline dataset: scikit-learn's 1,797 8x8 handwritten digits as a `datasets.DatasetDict` of RGB
images with class names, split once (seed 0, stratified) into train / validation / test."""

from __future__ import annotations

import datasets
import numpy as np
from PIL import Image

DIGITS_DATASET_NAME = "scikit-learn digits (UCI optical recognition of handwritten digits, 8x8)"
DIGITS_IMAGE_SIZE = 32
VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.1
SPLIT_SEED = 0


def digits_dataset(image_size: int = DIGITS_IMAGE_SIZE) -> datasets.DatasetDict:
    """The digits as `image_size` x `image_size` RGB images (bicubic upscaling of the 8x8 grey originals, ink
    bright on black) with a `label` ClassLabel named "0" ... "9"."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # scikit-learn is a dev dependency; the default dataset needs it
        raise ImportError(
            "The default dataset (no --dataset) is scikit-learn's digits: install scikit-learn "
            "(`pip install scikit-learn`) or pass --dataset."
        ) from error
    digits = load_digits()
    pixels = np.clip(digits.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    images = [
        Image.fromarray(grey, mode="L").resize((image_size, image_size), Image.Resampling.BICUBIC).convert("RGB")
        for grey in pixels
    ]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(name) for name in digits.target_names])}
    )
    full = datasets.Dataset.from_dict({"image": images, "label": digits.target.tolist()}, features=features)
    held_out_fraction = VALIDATION_FRACTION + TEST_FRACTION
    first = full.train_test_split(test_size=held_out_fraction, seed=SPLIT_SEED, stratify_by_column="label")
    second = first["test"].train_test_split(
        test_size=TEST_FRACTION / held_out_fraction, seed=SPLIT_SEED, stratify_by_column="label"
    )
    return datasets.DatasetDict({"train": first["train"], "validation": second["train"], "test": second["test"]})
