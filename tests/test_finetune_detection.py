"""`finetune.py --task object-detection`: a short fine-tune of the demo Cascade Mask R-CNN on generated shapes,
reloading and `pipeline`, bad annotations, and box-aware transforms."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math

import datasets
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import hf_localvit  # noqa: F401  (Auto classes)
from hf_localvit.models.cascade_mask_rcnn import CascadeMaskRCNNImageProcessor
from hf_localvit.training.detection_data import (
    Categories,
    ObjectFields,
    decode_rles,
    encode_masks,
    find_categories,
    find_object_fields,
    parse_annotations,
    segmentation_to_rle,
)
from hf_localvit.training.detection_transforms import (
    DetectionCollator,
    detection_eval_transform,
    detection_train_transform,
    make_sample,
)
from hf_localvit.training.errors import DataError
from hf_localvit.training.tasks.object_detection import DetectionExample
from hf_localvit.training.seeding import seeded_cpu_rng
from hf_localvit.training.testing import DETECTION_CLASSES, detection_dataset, run_in_process

SIZE = 96  # generated images are 120 x 96


pytestmark = pytest.mark.usefixtures("offline_fine_tuning")


def _objects(boxes=(), categories=(), segmentations=None) -> dict:
    boxes = [list(map(float, box)) for box in boxes]
    areas = [box[2] * box[3] for box in boxes]
    segmentation = segmentations if segmentations is not None else [[] for _ in boxes]
    return {"bbox": boxes, "category": list(categories), "area": areas, "segmentation": segmentation}


def _with_bad_rows(dsd: datasets.DatasetDict) -> datasets.DatasetDict:
    """Training rows: an image without objects, one whose only box has zero width, and one with a zero-area box, a
    box entirely outside the image and a box partly outside it next to its real objects. Validation: one image
    without objects (kept for evaluation)."""
    train, validation = dsd["train"], dsd["validation"]
    records = train.to_list()
    records.append({**records[0], "objects": _objects()})
    records.append({**records[1], "objects": _objects([[10, 10, 0, 20]], [0])})
    real = records[2]["objects"]
    extra = _objects([[5, 5, 10, 0], [500, 400, 30, 30], [100, 10, 40, 30]], [0, 1, 1])
    records[2] = {**records[2], "objects": {key: real[key] + extra[key] for key in real}}
    eval_records = validation.to_list() + [{**validation[0], "image": records[0]["image"], "objects": _objects()}]
    return datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(records, features=train.features),
            "validation": datasets.Dataset.from_list(eval_records, features=validation.features),
        }
    )


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
    """One short fine-tune of the demo preset from scratch (150 steps of 2 images, about 30 s on one core)."""
    root = tmp_path_factory.mktemp("detection")
    _with_bad_rows(detection_dataset(train_rows=48, validation_rows=12, size=SIZE, seed=0)).save_to_disk(root / "data")
    output = root / "run"
    argv = [
        "--task", "object-detection", "--model", "cascade-mask-rcnn-dwnet-demo", "--dataset", str(root / "data"),
        "--output-dir", str(output), "--num-workers", "0", "--image-size", str(SIZE), "--train-short-sides", "80",
        str(SIZE), "--per-device-train-batch-size", "2", "--per-device-eval-batch-size", "4", "--max-steps", "150",
        "--learning-rate", "3e-3", "--warmup-ratio", "0.1", "--logging-steps", "5", "--eval-steps", "75", "--eval-epochs", "0",
        "--predict-examples", "2", "--predict-threshold", "0.3",
    ]  # fmt: skip
    handler = logging.Handler()
    handler.records = []
    handler.emit = handler.records.append
    logger = logging.getLogger("hf_localvit")
    logger.addHandler(handler)
    threads, cache = torch.get_num_threads(), datasets.config.HF_DATASETS_CACHE
    torch.set_num_threads(1)
    datasets.config.HF_DATASETS_CACHE = str(root / "datasets-cache")
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            status = run_in_process(argv)
    finally:
        logger.removeHandler(handler)
        torch.set_num_threads(threads)
        datasets.config.HF_DATASETS_CACHE = cache
    assert status == 0
    log = "\n".join(record.getMessage() for record in handler.records)
    return root, output, json.loads((output / "all_results.json").read_text()), log, stdout.getvalue()


def test_fine_tuning_lowers_the_loss_and_learns_to_detect(fine_tuned):
    _, _, results, _, _ = fine_tuned
    losses = [entry["train_loss"] for entry in results["log_history"] if "train_loss" in entry]
    # The box losses grow as the RPN finds objects (more positives), so the total falls less than classification's.
    assert np.mean(losses[-3:]) < 0.6 * losses[0], losses
    # Chance level (random boxes on these large shapes) is about 0.05; the run reaches 0.3-0.6 over seeds.
    assert results["eval_map"] > 0.2 and results["eval_map_50"] > 0.4, results
    assert results["eval_mask_map"] > 0.1, results
    evaluations = [entry for entry in results["log_history"] if "eval_map" in entry]
    assert [entry["step"] for entry in evaluations] == [75, 150]
    assert results["global_step"] == 150 and results["eval_samples"] == 13


def test_empty_and_degenerate_annotations_are_filtered_and_logged(fine_tuned):
    _, _, results, log, _ = fine_tuned
    assert results["train_examples"] == 48 and results["validation_examples"] == 13
    assert "Split 'train': clipped 1 box(es) partly outside their image" in log
    assert "dropped 2 box(es) under 1 pixel wide or high; dropped 1 box(es) outside their image" in log
    assert "Leaving 2 image(s) without usable objects out of training split 'train' (rows 48, 49)" in log


def test_the_folder_reloads_with_the_auto_class_and_the_pipeline(fine_tuned):
    from transformers import AutoImageProcessor, AutoModelForObjectDetection, pipeline

    root, output, _, _, stdout = fine_tuned
    assert (output / "model.safetensors").is_file() and (output / "preprocessor_config.json").is_file()
    model = AutoModelForObjectDetection.from_pretrained(output).eval()
    assert model.config.id2label == dict(enumerate(DETECTION_CLASSES))
    processor = AutoImageProcessor.from_pretrained(output)
    assert processor.size.shortest_edge == SIZE
    image = datasets.load_from_disk(str(root / "data"))["validation"][0]["image"]
    detections = pipeline("object-detection", model=str(output), device="cpu")(image, threshold=0.05)
    assert detections and {d["label"] for d in detections} <= set(DETECTION_CLASSES)
    assert "Predictions of pipeline('object-detection') on held-out images:" in stdout
    assert "held-out image 1: true" in stdout

    card = (output / "README.md").read_text()
    for expected in ("pipeline_tag: object-detection", "eval_map", "eval_mask_map_50", "learning_rate | 0.003",
                     "lr_scheduler_type | step", "Instance masks: yes"):  # fmt: skip
        assert expected in card


def test_a_saved_detector_fine_tunes_on_other_categories_boxes_only(fine_tuned, tmp_path, caplog):
    """xyxy boxes, string categories, no segmentation: the class-specific layers are re-initialised."""
    _, trained, _, _, _ = fine_tuned
    rows = {"image": [], "objects": []}
    rng = np.random.default_rng(1)
    for index in range(6):
        image = Image.fromarray(rng.integers(0, 90, size=(SIZE, SIZE, 3), dtype=np.uint8))
        ImageDraw.Draw(image).rectangle((20, 30, 60, 70), fill=(250, 250, 0))
        rows["image"].append(image)
        rows["objects"].append([{"bbox": [20.0, 30.0, 60.0, 70.0], "category": ["cat", "dog", "emu"][index % 3]}])
    datasets.Dataset.from_dict(rows).save_to_disk(tmp_path / "data")
    output = tmp_path / "run"
    argv = [
        "--task", "object-detection", "--model", str(trained), "--dataset", str(tmp_path / "data"), "--output-dir",
        str(output), "--box-format", "xyxy", "--num-workers", "0", "--max-steps", "2", "--validation-fraction",
        "0.34", "--train-short-sides", "80", str(SIZE),
    ]  # fmt: skip
    with caplog.at_level("WARNING"):
        assert run_in_process(argv) == 0
    assert "has 2 classes; the dataset has 3, so the class-specific layers" in caplog.text
    results = json.loads((output / "all_results.json").read_text())
    assert "eval_map" in results and "eval_mask_map" not in results
    config = json.loads((output / "config.json").read_text())
    assert config["id2label"] == {"0": "cat", "1": "dog", "2": "emu"}


def test_other_categories_reinitialise_only_the_class_specific_layers(fine_tuned):
    import argparse

    from safetensors.torch import load_file

    from hf_localvit.training.tasks.object_detection import build_detection_model

    _, trained, _, _, _ = fine_tuned
    args = argparse.Namespace(model=str(trained), drop_path_rate=None, image_size=None, trust_remote_code=False)
    model, processor, base_model = build_detection_model(args, ["a", "b", "c"])
    saved, state = load_file(trained / "model.safetensors"), model.state_dict()
    changed = {key for key in saved if saved[key].shape != state[key].shape or not torch.equal(saved[key], state[key])}
    layers = {f"roi_heads.box_heads.{s}.{layer}" for s in range(3) for layer in ("classifier", "regressor")}
    layers |= {f"roi_heads.mask_heads.{s}.mask_logits" for s in range(3)}
    assert changed == {f"{layer}.{kind}" for layer in layers for kind in ("weight", "bias")}
    head = model.roi_heads.box_heads[0]
    classifier, regressor = head.classifier.weight.detach(), head.regressor.weight.detach()
    assert classifier.shape == (4, 128) and 0.005 < float(classifier.std()) < 0.02  # mmdetection's N(0, 0.01)
    assert float(regressor.abs().max()) < 0.01 and not head.classifier.bias.any()
    assert torch.isfinite(model.roi_heads.mask_heads[0].mask_logits.weight).all()
    assert base_model is None and processor.size.shortest_edge == SIZE


def test_out_of_range_category_stops_the_run_naming_the_row(tmp_path, capsys):
    dsd = detection_dataset(train_rows=4, validation_rows=4, size=64, seed=0, masks=False)
    validation = dsd["validation"].to_list()
    validation[3]["objects"]["category"][0] = -1  # a ClassLabel stores -1 for "no label"
    dsd["validation"] = datasets.Dataset.from_list(validation, features=dsd["validation"].features)
    dsd.save_to_disk(tmp_path / "data")
    argv = ["--task", "object-detection", "--model", "cascade-mask-rcnn-dwnet-demo", "--dataset",
            str(tmp_path / "data"), "--output-dir", str(tmp_path / "run")]  # fmt: skip
    assert run_in_process(argv) == 2
    error = capsys.readouterr().err
    assert "finetune.py: error: Row 3 of split 'validation' has an object of category -1" in error
    assert "outside the 2 categories" in error and "Traceback" not in error


def test_annotation_parsing_clips_drops_and_names_bad_rows():
    fields = ObjectFields(column="objects", bbox="bbox", category="category", iscrowd="iscrowd")
    categories = Categories(["a", "b"])
    objects = {
        "bbox": [[10, 10, 20, 20], [90, 50, 30, 30], [200, 200, 5, 5], [0, 0, 0.5, 8]],
        "category": [0, 1, 1, 0],
        "iscrowd": [0, 1, 0, 0],
    }
    parsed = parse_annotations(objects, 100, 60, fields, categories, "xywh", "train", 7)
    np.testing.assert_allclose(parsed.boxes, [[10, 10, 30, 30], [90, 50, 100, 60]])
    assert parsed.labels.tolist() == [0, 1] and parsed.iscrowd.tolist() == [False, True]
    assert (parsed.clipped, parsed.outside, parsed.degenerate) == (1, 1, 1)
    as_list = [{"bbox": [10, 10, 30, 30], "category": 1, "iscrowd": 0}]  # a list of objects, xyxy
    parsed = parse_annotations(as_list, 100, 60, fields, categories, "xyxy", "train", 0)
    np.testing.assert_allclose(parsed.boxes, [[10, 10, 30, 30]])
    with pytest.raises(DataError, match=r"Row 7 of split 'train': object 0 has box \[1, 2, 3\]; expected 4"):
        parse_annotations({"bbox": [[1, 2, 3]], "category": [0]}, 100, 60, fields, categories, "xywh", "train", 7)
    with pytest.raises(DataError, match="Row 2 of split 'test' has an object of category 2, outside the 2"):
        parse_annotations({"bbox": [[1, 2, 3, 4]], "category": [2]}, 100, 60, fields, categories, "xywh", "test", 2)
    with pytest.raises(DataError, match="has 2 boxes but 1 categories"):
        parse_annotations({"bbox": [[1, 2, 3, 4]] * 2, "category": [0]}, 100, 60, fields, categories, "xywh", "t", 0)


def test_fields_and_category_names_are_found():
    dsd = detection_dataset(train_rows=2, validation_rows=1, size=64)
    fields = find_object_fields(dsd["train"], None)
    assert (fields.column, fields.bbox, fields.category, fields.segmentation, fields.area) == (
        "objects", "bbox", "category", "segmentation", "area"
    )
    assert find_object_fields(dsd["train"], None, use_masks=False).segmentation is None
    assert find_categories(dsd, fields).names == list(DETECTION_CLASSES)
    numbered = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"objects": [{"bbox": [[1, 2, 3, 4]] * 2, "category": [3, 1]}]})}
    )
    assert find_categories(numbered, find_object_fields(numbered["train"], None)).names == ["0", "1", "2", "3"]
    with pytest.raises(DataError, match="Could not find the objects column"):
        find_object_fields(dsd["train"].remove_columns("objects"), None)


def test_segmentations_become_masks_of_the_image_size():
    polygon = [[10.0, 10.0, 30.0, 10.0, 30.0, 20.0, 10.0, 20.0]]
    mask = decode_rles([segmentation_to_rle(polygon, np.array([10, 10, 30, 20]), 40, 50)], 40, 50)[0]
    assert mask.shape == (40, 50) and 180 <= mask.sum() <= 231 and mask[15, 20] == 1 and mask[5, 5] == 0
    box_filled = decode_rles([segmentation_to_rle([], np.array([0, 0, 10, 5]), 40, 50)], 40, 50)[0]
    assert box_filled[:5, :10].all() and box_filled.sum() <= 66
    bitmap = np.zeros((40, 50), dtype=np.uint8)
    bitmap[5:9, 7:12] = 1
    np.testing.assert_array_equal(decode_rles([segmentation_to_rle(bitmap, None, 40, 50)], 40, 50)[0], bitmap)
    with pytest.raises(ValueError, match="the mask is 50x40 pixels but the image is 60x40"):
        segmentation_to_rle(bitmap, None, 40, 60)
    rle = {"size": [40, 50], "counts": encode_masks(bitmap[None])[0]["counts"]}
    with pytest.raises(ValueError, match="the mask is 50x40 pixels but the image is 50x30"):
        segmentation_to_rle(rle, None, 30, 50)


# ------------------------------------------------------------------------------------------------- transforms
def _box_image(width: int, height: int, box: tuple[int, int, int, int]) -> tuple[Image.Image, torch.Tensor]:
    image = Image.new("RGB", (width, height))
    ImageDraw.Draw(image).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(255, 255, 255))
    mask = torch.zeros(1, height, width, dtype=torch.uint8)
    mask[0, box[1] : box[3], box[0] : box[2]] = 1
    return image, mask


def _bright_extent(pixel_values: torch.Tensor) -> list[int]:
    ys, xs = torch.nonzero(pixel_values.mean(0) > 0.5, as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_flip_and_multiscale_resize_keep_boxes_and_masks_on_the_object():
    processor = CascadeMaskRCNNImageProcessor()
    transform = detection_train_transform(processor, short_sides=[60, 90, 120], max_long_side=150, hflip=True)
    box = (10, 20, 40, 50)
    image, mask = _box_image(100, 60, box)
    seen = set()
    for index in range(12):
        with seeded_cpu_rng(0, index):
            sample = transform(make_sample(image, torch.tensor([box], dtype=torch.float32), torch.tensor([1]), mask))
        pixels, boxes = sample["image"], sample["boxes"]
        height, width = pixels.shape[-2:]
        assert min(height, width) in (60, 90, 120) or max(height, width) == 150
        assert max(height, width) <= 150 and round(width / height, 1) == round(100 / 60, 1)
        x1, y1, x2, y2 = boxes[0].tolist()
        flipped = x1 > width / 2
        seen.add((min(height, width), flipped))
        assert np.allclose([x1, y1, x2, y2], _bright_extent(pixels), atol=1.5)
        assert np.allclose(_bright_extent(sample["masks"].float()), [x1, y1, x2, y2], atol=1.5)
        assert sample["labels"].tolist() == [1]
    assert len({side for side, _ in seen}) >= 2 and {flipped for _, flipped in seen} == {True, False}


def test_boxes_made_too_small_by_resizing_are_removed_with_their_labels_and_masks():
    processor = CascadeMaskRCNNImageProcessor()
    transform = detection_train_transform(processor, short_sides=[30], max_long_side=1000, hflip=False)
    image, mask = _box_image(200, 120, (10, 20, 40, 50))
    masks = torch.cat([mask, torch.zeros_like(mask)])
    masks[1, 0:2, 0:2] = 1
    boxes = torch.tensor([[10.0, 20.0, 40.0, 50.0], [0.0, 0.0, 2.0, 2.0]])  # the second is under a pixel at 1/4 scale
    sample = transform(make_sample(image, boxes, torch.tensor([0, 1]), masks))
    assert sample["labels"].tolist() == [0] and sample["masks"].shape == (1, 30, 50)
    np.testing.assert_allclose(sample["boxes"][0].tolist(), [2.5, 5.0, 10.0, 12.5])


def test_evaluation_images_are_the_processors_and_the_collate_pads_like_it():
    processor = CascadeMaskRCNNImageProcessor(size={"shortest_edge": 64, "longest_edge": 100})
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 90, 3), dtype=np.uint8))
    expected = processor(images=image, return_tensors="pt")
    pixels = detection_eval_transform(processor)(image)
    height, width = pixels.shape[-2:]
    torch.testing.assert_close(pixels, expected["pixel_values"][0, :, :height, :width])

    collate = DetectionCollator(32)
    examples = [
        {"pixel_values": torch.ones(3, 40, 70), "boxes": torch.tensor([[7.0, 4.0, 35.0, 20.0]]),
         "class_labels": torch.tensor([1]), "masks": torch.ones(1, 40, 70, dtype=torch.uint8)},
        {"pixel_values": torch.ones(3, 64, 30), "boxes": torch.zeros(0, 4), "class_labels": torch.zeros(0, dtype=torch.long),
         "masks": torch.zeros(0, 64, 30, dtype=torch.uint8)},
    ]  # fmt: skip
    batch = collate(examples)
    assert batch["pixel_values"].shape == (2, 3, 64, 96) and batch["pixel_mask"].shape == (2, 64, 96)
    assert batch["pixel_mask"][0, :40, :70].all() and batch["pixel_mask"][0].sum() == 40 * 70
    assert batch["pixel_values"][0, :, 40:].abs().sum() == 0
    # (cx, cy, w, h) of (7, 4, 35, 20), normalised by the padded 96 x 64
    torch.testing.assert_close(batch["labels"][0]["boxes"], torch.tensor([[21 / 96, 12 / 64, 28 / 96, 16 / 64]]))
    assert batch["labels"][0]["masks"].shape == (1, 64, 96) and batch["labels"][0]["masks"].sum() == 40 * 70
    assert batch["labels"][1]["boxes"].shape == (0, 4)


def test_detection_defaults_follow_the_original_recipe_and_the_step_schedule():
    from hf_localvit.training import parse_args
    from hf_localvit.training.schedules import build_scheduler

    args = parse_args(["--task", "object-detection", "--model", "m", "--dataset", "d", "--output-dir", "o"])
    assert (args.learning_rate, args.weight_decay, args.lr_scheduler_type) == (1e-4, 0.05, "step")
    assert (args.per_device_train_batch_size, args.num_epochs, args.max_grad_norm) == (2, 36, 0.0)
    assert parse_args(["--model", "m", "--dataset", "d", "--output-dir", "o"]).lr_scheduler_type == "cosine"

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler("step", optimizer, num_warmup_steps=10, num_training_steps=100)
    rates = []
    for _ in range(100):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[5] == pytest.approx(0.5) and rates[10] == rates[74] == 1.0  # linear warm-up, then the peak
    assert rates[75] == pytest.approx(0.1) and rates[91] == pytest.approx(0.1) and rates[92] == pytest.approx(0.01)


def test_evaluation_maps_predictions_back_to_each_original_image():
    """Downscaled, non-square images of two orientations in one padded batch: a model that detects exactly the
    ground truth (in its input frame) scores box and mask AP 1 once `eval_outputs` maps it back."""
    import argparse

    from hf_localvit.metrics import load_metric
    from hf_localvit.models.cascade_mask_rcnn.modeling_cascade_mask_rcnn import (
        CascadeMaskRCNNOutput,
        valid_sizes_from_mask,
    )
    from hf_localvit.training.tasks.object_detection import ObjectDetectionTask

    processor = CascadeMaskRCNNImageProcessor(size={"shortest_edge": 64, "longest_edge": 100})
    fields = ObjectFields(column="objects", bbox="bbox", category="category", segmentation="segmentation")
    example = DetectionExample(
        fields, Categories(["a", "b"]), "xywh", "validation", detection_eval_transform(processor), training=False,
        use_masks=True,
    )  # fmt: skip
    rows = [
        {"image": Image.new("RGB", (300, 150)), "objects": _objects([[40, 30, 100, 60]], [1])},
        {"image": Image.new("RGB", (90, 200)), "objects": _objects([[10, 20, 50, 120]], [0])},
    ]
    batch = DetectionCollator(32)([example(row, index) for index, row in enumerate(rows)])
    valid = valid_sizes_from_mask(batch["pixel_values"], batch["pixel_mask"])
    assert valid.tolist() == [[50, 100], [100, 45]] and batch["original_sizes"].tolist() == [[150, 300], [200, 90]]

    class Oracle(torch.nn.Module):
        def forward(self, pixel_values, pixel_mask, original_sizes):
            boxes = [
                torch.tensor(reference["boxes"]) * torch.tensor([w / ow, h / oh, w / ow, h / oh])
                for (h, w), (oh, ow), reference in zip(valid.tolist(), original_sizes.tolist(), batch["references"])
            ]
            return CascadeMaskRCNNOutput(
                pred_boxes=boxes, scores=[torch.tensor([0.9])] * 2, labels=[torch.tensor([1]), torch.tensor([0])],
                pred_masks=[torch.ones(1, 28, 28)] * 2, image_sizes=valid, original_sizes=original_sizes,
            )  # fmt: skip

    task = ObjectDetectionTask(argparse.Namespace())
    task.processor, task.use_masks = processor, True
    outputs = task.eval_outputs(Oracle(), batch)
    for output, expected in zip(outputs, [[40, 30, 140, 90], [10, 20, 60, 140]]):
        np.testing.assert_allclose(output["prediction"]["boxes"], [expected], atol=1e-3)
        assert output["prediction"]["masks"][0]["size"] == [output["reference"]["height"], output["reference"]["width"]]
    metric = load_metric("coco_map")
    metric.add_batch(predictions=[o["prediction"] for o in outputs], references=[o["reference"] for o in outputs])
    results = metric.compute()
    assert results["map"] == pytest.approx(1.0) and results["mask_map"] == pytest.approx(1.0), results


def test_training_errors_name_the_split_row_after_rows_without_objects_are_left_out():
    processor = CascadeMaskRCNNImageProcessor()
    fields = ObjectFields(column="objects", bbox="bbox", category="category", segmentation="segmentation")
    example = DetectionExample(
        fields, Categories(["a", "b"]), "xywh", "train", detection_train_transform(processor, [64], 100), training=True,
        use_masks=True, row_numbers=[0, 2, 5],
    )  # fmt: skip
    rgb_mask = Image.new("RGB", (30, 20))  # a mask must be 2-D
    row = {"image": Image.new("RGB", (30, 20)), "objects": _objects([[1, 1, 10, 10]], [1], [rgb_mask])}
    with pytest.raises(DataError, match=r"Row 5 of split 'train': the segmentation of kept object 0 cannot be read"):
        example(row, 2)
    with pytest.raises(DataError, match=r"Image 2 of split 'train'"):
        example({**row, "image": {"bytes": b"not an image", "path": None}}, 1)


def test_step_milestones_fall_on_the_same_optimizer_step_for_any_process_count():
    """The trainer scales the schedule by the process count and steps it that many times per optimizer step."""
    from hf_localvit.training.schedules import build_scheduler

    def rates(max_steps: int, processes: int) -> list[float]:
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = build_scheduler("step", optimizer, processes, max_steps * processes)  # one warm-up step
        seen = []
        for _ in range(max_steps):
            seen.append(scheduler.get_last_lr()[0])
            optimizer.step()
            for _ in range(processes):
                scheduler.step()
        return seen

    for max_steps in (14, 22, 30, 36 * 5):
        single = rates(max_steps, 1)
        assert all(rates(max_steps, processes) == single for processes in (2, 4)), max_steps
        first_drop = single.index(pytest.approx(0.1))
        assert first_drop == math.ceil(0.75 * max_steps), (max_steps, single)
    assert single[134] == 1.0 and single[135] == pytest.approx(0.1)  # epoch 27 of 36 at 5 steps per epoch
    assert single[164] == pytest.approx(0.1) and single[165] == pytest.approx(0.01)  # epoch 33
