"""The local `evaluate` COCO mAP module (pycocotools): offline loading, hand-made cases with known AP, masks."""

from __future__ import annotations

import evaluate
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from hf_localvit.metrics import load_metric, metric_path

BOX = [20.0, 30.0, 120.0, 130.0]  # 100 x 100: a "large" object (area > 96^2)


def _reference(image_id=0, boxes=(BOX,), labels=(1,), **extra):
    return {"image_id": image_id, "height": 200, "width": 200, "boxes": list(boxes), "labels": list(labels), **extra}


def _prediction(image_id=0, boxes=(BOX,), scores=(0.9,), labels=(1,), **extra):
    return {"image_id": image_id, "boxes": list(boxes), "scores": list(scores), "labels": list(labels), **extra}


def _rle(y0, y1, x0, x1, size=200):
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [size, size], "counts": rle["counts"].decode("ascii")}


def test_loads_offline_from_the_package_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(metric_path("coco_map"), keep_in_memory=True)
    results = metric.compute(predictions=[_prediction()], references=[_reference()])
    assert results["map"] == pytest.approx(1.0) and results["map_large"] == pytest.approx(1.0)
    assert results["map_small"] == results["map_medium"] == -1.0  # no ground truth of those sizes
    assert "mask_map" not in results


def test_a_shifted_box_scores_the_iou_thresholds_it_passes():
    # Shifted right by 20 px: IoU = 80 * 100 / (2 * 100 * 100 - 80 * 100) = 2/3, a true positive at IoU thresholds
    # 0.50, 0.55, 0.60, 0.65 only, so AP = 4/10, AP50 = 1, AP75 = 0.
    shifted = [BOX[0] + 20, BOX[1], BOX[2] + 20, BOX[3]]
    results = load_metric("coco_map").compute(predictions=[_prediction(boxes=[shifted])], references=[_reference()])
    assert results["map"] == pytest.approx(0.4)
    assert results["map_50"] == pytest.approx(1.0) and results["map_75"] == pytest.approx(0.0)


def test_ranking_classes_and_images_are_accounted_for():
    metric = load_metric("coco_map")
    far = [150.0, 150.0, 190.0, 190.0]
    # image 0: a confident false positive ranked above the true positive -> precision 1/2 at full recall
    metric.add_batch(predictions=[_prediction(boxes=[far, BOX], scores=[0.9, 0.8], labels=[1, 1])], references=[_reference()])
    # image 1: class 2 detected as class 1 -> class 2 has AP 0, class 1 gains a false positive at low score
    metric.add(prediction=_prediction(1, labels=[1], scores=[0.1]), reference=_reference(1, labels=[2]))
    results = metric.compute()
    # class 1: detections 0.9 FP, 0.8 TP, 0.1 FP over 1 ground truth -> AP 0.5; class 2: AP 0 -> mean 0.25
    assert results["map"] == pytest.approx(0.25)
    empty = load_metric("coco_map").compute(predictions=[_prediction(boxes=[], scores=[], labels=[])],
                                            references=[_reference()])  # fmt: skip
    assert empty["map"] == 0.0


def test_masks_are_evaluated_by_mask_iou():
    truth = _rle(30, 130, 20, 120)
    half = _rle(30, 130, 20, 70)  # half the object: mask IoU 0.5 -> a hit at threshold 0.5 only
    results = load_metric("coco_map").compute(
        predictions=[_prediction(masks=[half])], references=[_reference(masks=[truth])]
    )
    assert results["map"] == pytest.approx(1.0)  # the boxes are perfect
    assert results["mask_map"] == pytest.approx(0.1) and results["mask_map_50"] == pytest.approx(1.0)
    assert results["mask_map_75"] == pytest.approx(0.0)
    perfect = load_metric("coco_map").compute(
        predictions=[_prediction(masks=[truth])], references=[_reference(masks=[truth])]
    )
    assert [perfect[key] for key in ("mask_map", "mask_map_50", "mask_map_75", "mask_map_large")] == pytest.approx(
        [1.0] * 4
    )
    boxes_only = load_metric("coco_map").compute(
        predictions=[_prediction(masks=[truth])], references=[_reference(masks=[truth])], iou_types=["bbox"]
    )
    assert "mask_map" not in boxes_only


def test_crowd_regions_and_given_areas():
    crowd = [0.0, 0.0, 200.0, 20.0]
    results = load_metric("coco_map").compute(
        predictions=[_prediction(boxes=[BOX, [10.0, 2.0, 60.0, 18.0]], scores=[0.9, 0.95], labels=[1, 1])],
        references=[_reference(boxes=[BOX, crowd], labels=[1, 1], iscrowd=[0, 1], area=[500.0, 4000.0])],
    )
    assert results["map"] == pytest.approx(1.0)  # the detection inside the crowd region is not a false positive
    assert results["map_small"] == pytest.approx(1.0) and results["map_large"] == -1.0  # area 500 is "small"


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        ([_prediction(image_id=5)], [_reference()], r"image ids \[5\] that have no reference"),
        ([_prediction(), _prediction()], [_reference(), _reference()], "image ids must be unique"),
        ([_prediction(scores=[0.9, 0.8])], [_reference()], "1 boxes but 2 scores"),
        ([_prediction(boxes=[[1.0, 2.0, 3.0]])], [_reference()], "without 4 coordinates"),
        (
            [_prediction(), _prediction(1)],
            [_reference(masks=[_rle(0, 5, 0, 5)]), _reference(1)],
            "image 1 gives no masks while other images do",
        ),
    ],
)
def test_bad_inputs_are_named(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        load_metric("coco_map").compute(predictions=predictions, references=references)


def test_max_detections_other_than_100_keeps_the_headline_ap():
    """COCOeval.summarize reads the headline AP at 100 detections whatever maxDets is (-1 otherwise)."""
    far = [150.0, 150.0, 190.0, 190.0]
    prediction = _prediction(boxes=[far, BOX], scores=[0.9, 0.8], labels=[1, 1])  # the hit ranks second
    for max_detections in (2, 50, 300):
        results = load_metric("coco_map").compute(
            predictions=[prediction], references=[_reference()], max_detections=max_detections
        )
        assert results["map"] == pytest.approx(0.5) and results["map_50"] == pytest.approx(0.5), max_detections
    top_one = load_metric("coco_map").compute(predictions=[prediction], references=[_reference()], max_detections=1)
    assert top_one["map"] == 0.0 and top_one["map_large"] == 0.0  # only the false positive is kept


@pytest.mark.parametrize(
    ("predictions", "references", "kwargs", "message"),
    [
        ([_prediction()], [_reference()], {"iou_types": ["segm"]}, "'segm' needs one RLE mask per box"),
        ([_prediction(), _prediction()], [_reference(), _reference(1)], {}, "predictions: image ids must be unique"),
        ([_prediction()], [_reference()], {"max_detections": 0}, "max_detections must be a positive integer"),
    ],
)
def test_bad_options_and_duplicate_predictions_are_named(predictions, references, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_metric("coco_map").compute(predictions=predictions, references=references, **kwargs)
