"""Small synthetic data and models for tests and smoke runs of `finetune.py` (seconds on a CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
from PIL import Image, ImageDraw

from ..models.dwnet import DOWNSTREAM_FLAVOUR, DWNetConfig, DWNetForImageClassification, dwnet_image_processor

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


DETECTION_CLASSES = ("red_rectangle", "green_ellipse")
_DETECTION_COLOURS = {"red_rectangle": (230, 40, 40), "green_ellipse": (40, 210, 60)}


def _shape_polygon(name: str, left: float, top: float, width: float, height: float) -> list[float]:
    """The outline of a rectangle, or of an ellipse as a 32-point polygon, as a flat COCO x, y list."""
    if name == "red_rectangle":
        right, bottom = left + width, top + height
        return [left, top, right, top, right, bottom, left, bottom]
    angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    xs = left + width / 2 + (width / 2) * np.cos(angles)
    ys = top + height / 2 + (height / 2) * np.sin(angles)
    return [float(v) for xy in zip(xs, ys) for v in xy]


def detection_image(rng: np.random.Generator, size: int = 128, max_objects: int = 2) -> tuple[Image.Image, dict]:
    """A noisy background with 1..`max_objects` coloured rectangles/ellipses at random places (a wider-than-high
    image, to exercise keep-ratio resizing), and its COCO-style objects: `bbox` (x, y, w, h), `category`, `area`,
    `segmentation` (the polygon the shape was drawn from)."""
    width, height = size + size // 4, size
    image = Image.fromarray(rng.integers(0, 90, size=(height, width, 3), dtype=np.uint8), mode="RGB")
    draw = ImageDraw.Draw(image)
    objects: dict[str, list] = {"bbox": [], "category": [], "area": [], "segmentation": []}
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.integers(0, len(DETECTION_CLASSES)))
        name = DETECTION_CLASSES[label]
        box_w, box_h = (int(v) for v in rng.integers(size // 4, size // 2 + 1, size=2))
        left, top = int(rng.integers(0, width - box_w)), int(rng.integers(0, height - box_h))
        polygon = _shape_polygon(name, left, top, box_w, box_h)
        draw.polygon(polygon, fill=_DETECTION_COLOURS[name])
        objects["bbox"].append([float(left), float(top), float(box_w), float(box_h)])
        objects["category"].append(label)
        objects["area"].append(float(box_w * box_h if name == "red_rectangle" else np.pi * box_w * box_h / 4))
        objects["segmentation"].append([polygon])
    return image, objects


def detection_dataset(
    train_rows: int = 32, validation_rows: int = 8, size: int = 128, seed: int = 0, masks: bool = True
) -> datasets.DatasetDict:
    """Generated images with known boxes in the Hub's COCO-style layout: `image`, `image_id`, `width`, `height` and
    `objects` (`bbox` in COCO x, y, w, h pixels, `category` a ClassLabel, `area`, and with `masks` the polygon
    `segmentation` of each object)."""
    rng = np.random.default_rng(seed)
    object_features = {
        "bbox": datasets.Sequence(datasets.Value("float32"), length=4),
        "category": datasets.ClassLabel(names=list(DETECTION_CLASSES)),
        "area": datasets.Value("float32"),
    }
    if masks:
        object_features["segmentation"] = datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
    features = datasets.Features(
        {
            "image_id": datasets.Value("int64"),
            "image": datasets.Image(),
            "width": datasets.Value("int32"),
            "height": datasets.Value("int32"),
            "objects": datasets.Sequence(object_features),
        }
    )
    splits, image_id = {}, 0
    for split, rows in (("train", train_rows), ("validation", validation_rows)):
        columns: dict[str, list] = {name: [] for name in features}
        for _ in range(rows):
            image, objects = detection_image(rng, size)
            if not masks:
                objects.pop("segmentation")
            columns["image_id"].append(image_id)
            columns["image"].append(image)
            columns["width"].append(image.width)
            columns["height"].append(image.height)
            columns["objects"].append(objects)
            image_id += 1
        splits[split] = datasets.Dataset.from_dict(columns, features=features)
    return datasets.DatasetDict(splits)


# Semantic segmentation: annotation 0 is the unlabelled outline of each shape (ADE20K-style, so --reduce-labels
# makes it the ignore index), 1 the background and 2.. the shapes, i.e. class i + 1 of this list.
SEGMENTATION_CLASSES = ("background", *SHAPE_CLASSES)


def segmentation_example(rng: np.random.Generator, size: int = 64, shapes: int = 2) -> tuple[Image.Image, Image.Image]:
    """An image of `shapes` coloured shapes (random class, place, size and shade) on a textured noisy background,
    and its annotation (mode L): 1 background, `2 + SHAPE_CLASSES.index(shape)` inside a shape, 0 on its outline."""
    rows, columns = np.mgrid[0:size, 0:size]
    period = rng.uniform(4, 12)
    stripes = 40 * (np.sin((rows * rng.uniform(-1, 1) + columns) / period) > 0)[..., None]
    background = rng.integers(0, 60, size=(size, size, 3)) + stripes + rng.integers(0, 40, size=3)
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8), mode="RGB")
    annotation = Image.new("L", (size, size), 1)
    draw, mark = ImageDraw.Draw(image), ImageDraw.Draw(annotation)
    for _ in range(shapes):
        label = int(rng.integers(len(SHAPE_CLASSES)))
        name = SHAPE_CLASSES[label]
        colour = tuple(int(np.clip(c + rng.integers(-30, 31), 0, 255)) for c in _COLOURS[name])
        extent = int(rng.integers(size // 4, size // 2 + 1))
        left, top = (int(v) for v in rng.integers(0, size - extent, size=2))
        height = extent if name != "blue_bar" else 2 * extent // 3
        box = (left, top, left + extent - 1, top + height - 1)
        draw_shape = "ellipse" if name == "green_disc" else "rectangle"
        getattr(draw, draw_shape)(box, fill=colour)
        getattr(mark, draw_shape)(box, fill=2 + label, outline=0)
    return image, annotation


def segmentation_dataset(
    train_rows: int = 32, validation_rows: int = 8, size: int = 64, seed: int = 0
) -> datasets.DatasetDict:
    """`segmentation_example`s as a `DatasetDict` with the columns of the Hub's ADE20K (`image`, `annotation`)."""
    rng = np.random.default_rng(seed)
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    splits = {}
    for split, rows in (("train", train_rows), ("validation", validation_rows)):
        images, annotations = zip(*(segmentation_example(rng, size) for _ in range(rows)))
        splits[split] = datasets.Dataset.from_dict(
            {"image": list(images), "annotation": list(annotations)}, features=features
        )
    return datasets.DatasetDict(splits)


def write_segmentation_dataset(root: str | Path, with_names: bool = True, **kwargs) -> Path:
    """`segmentation_dataset` saved with `save_to_disk`, with an `id2label.json` of the classes (after
    `--reduce-labels`) next to it when `with_names`."""
    root = Path(root)
    segmentation_dataset(**kwargs).save_to_disk(root)
    if with_names:
        (root / "id2label.json").write_text(json.dumps(dict(enumerate(SEGMENTATION_CLASSES))))
    return root


def save_tiny_segmentation_model(
    folder: str | Path, num_labels: int = 6, embed_dim: int = 16, scale: tuple[int, int] = (256, 64)
) -> Path:
    """A randomly initialised UperNet with a tiny DWNet backbone (0.8M parameters) and the DWNet segmentation
    processor (keep-ratio resize within `scale`, long by short side), saved like a Hub model."""
    from transformers import UperNetForSemanticSegmentation
    from transformers.image_utils import SizeDict

    from ..models.upernet_dwnet import upernet_dwnet_config, upernet_dwnet_image_processor

    folder = Path(folder)
    backbone = DWNetConfig(embed_dim=embed_dim, depths=[1, 1, 1, 1], kernel_size=3, **DOWNSTREAM_FLAVOUR)
    config = upernet_dwnet_config(backbone, num_labels=num_labels, hidden_size=64, auxiliary_channels=32)
    UperNetForSemanticSegmentation(config).save_pretrained(folder)
    processor = upernet_dwnet_image_processor(do_reduce_labels=False)
    processor.size = SizeDict(longest_edge=scale[0], shortest_edge=scale[1])
    processor.save_pretrained(folder)
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
