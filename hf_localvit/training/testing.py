"""Small synthetic data and models for tests and smoke runs of `finetune.py` (seconds on a CPU)."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
from PIL import Image, ImageDraw

from ..models.dwnet import DWNetConfig, DWNetForImageClassification, dwnet_image_processor

SHAPE_CLASSES = ("red_square", "green_disc", "blue_bar")
_COLOURS = {"red_square": (220, 40, 40), "green_disc": (40, 200, 60), "blue_bar": (40, 70, 230)}


def shape_image(label: int, rng: np.random.Generator, size: int = 32) -> Image.Image:
    """A noisy background with one coloured shape of class `label` at a random place."""
    background = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
    image = Image.fromarray(background, mode="RGB")
    draw = ImageDraw.Draw(image)
    name = SHAPE_CLASSES[label]
    extent = int(rng.integers(size // 3, size // 2 + 1))
    left, top = (int(v) for v in rng.integers(0, size - extent, size=2))
    box = (left, top, left + extent, top + extent)
    if name == "red_square":
        draw.rectangle(box, fill=_COLOURS[name])
    elif name == "green_disc":
        draw.ellipse(box, fill=_COLOURS[name])
    else:
        draw.rectangle((left, top, left + extent, top + max(extent // 3, 2)), fill=_COLOURS[name])
    return image


def write_image_folder(
    root: str | Path, train_per_class: int = 16, validation_per_class: int = 4, size: int = 32, seed: int = 0
) -> Path:
    """`root/{train,validation}/<class>/<n>.png`: the layout `--dataset FOLDER` (imagefolder) reads."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("validation", validation_per_class)):
        for label, name in enumerate(SHAPE_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                shape_image(label, rng, size).save(folder / f"{index:04d}.png")
    return root


def shapes_dataset(
    train_rows: int = 48, validation_rows: int = 12, size: int = 32, seed: int = 0
) -> datasets.DatasetDict:
    """The shapes as an in-memory `DatasetDict` (columns `img` and `shape`, to exercise column detection)."""
    rng = np.random.default_rng(seed)
    features = datasets.Features({"img": datasets.Image(), "shape": datasets.ClassLabel(names=list(SHAPE_CLASSES))})
    splits = {}
    for split, rows in (("train", train_rows), ("validation", validation_rows)):
        labels = [index % len(SHAPE_CLASSES) for index in range(rows)]
        images = [shape_image(label, rng, size) for label in labels]
        splits[split] = datasets.Dataset.from_dict({"img": images, "shape": labels}, features=features)
    return datasets.DatasetDict(splits)


def save_tiny_model(folder: str | Path, num_labels: int = 5, image_size: int = 32, embed_dim: int = 16) -> Path:
    """A randomly initialised few-thousand-parameter DWNet classifier and its processor, saved like a Hub model."""
    folder = Path(folder)
    config = DWNetConfig(
        embed_dim=embed_dim,
        depths=[1, 1, 1, 1],
        kernel_size=3,
        num_labels=num_labels,
        drop_path_rate=0.1,
        image_size=image_size,
    )
    DWNetForImageClassification(config).save_pretrained(folder)
    dwnet_image_processor(image_size=image_size, crop_pct=1.0).save_pretrained(folder)
    return folder


def run_in_process(argv: list[str]) -> int:
    """`finetune.py argv` in this process (single process, no launcher); resets Accelerate's process-wide state
    afterwards so the next call can configure it afresh. Returns the exit status."""
    from accelerate.state import AcceleratorState, GradientState

    from .trainer import main

    try:
        return main(argv)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
