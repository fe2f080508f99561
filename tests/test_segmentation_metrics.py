"""The local `evaluate` mean_iou module: hand-computed values, the ignore index, reduce_labels, and the areas path
that `finetune.py` uses (counts on the device, totals into the module) agreeing with the maps path."""

import evaluate
import numpy as np
import pytest
import torch

from hf_localvit.metrics import load_metric, metric_path

# Two images, 3 classes, 255 = ignore.
PREDICTIONS = [np.array([[0, 0, 1], [1, 2, 2]]), np.array([[2, 2], [0, 1]])]
REFERENCES = [np.array([[0, 1, 1], [1, 2, 255]]), np.array([[2, 0], [0, 255]])]
# Counted by hand over the non-ignored pixels (image 1: 5 pixels, image 2: 3 pixels):
#   class 0: predicted 3 (2 + 1), labelled 3 (1 + 2), both 2 (1 + 1) -> IoU 2 / (3 + 3 - 2), accuracy 2 / 3
#   class 1: predicted 2 (the second image's 1 is on an ignored pixel), labelled 3, both 2 -> IoU 2 / 3, accuracy 2 / 3
#   class 2: predicted 3 (1 + 2), labelled 2 (1 + 1), both 2 -> IoU 2 / 3, accuracy 1
EXPECTED_IOU = [0.5, 2 / 3, 2 / 3]
EXPECTED_ACCURACY = [2 / 3, 2 / 3, 1.0]


@pytest.fixture(scope="module")
def metric():
    return load_metric("mean_iou")


def test_loads_offline_from_the_package(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    module = evaluate.load(metric_path("mean_iou"), keep_in_memory=True)
    results = module.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [0, 255]]], num_labels=2)
    assert results["mean_iou"] == pytest.approx(0.5) and results["overall_accuracy"] == pytest.approx(2 / 3)


def test_hand_computed_values_with_the_ignore_index(metric):
    results = metric.compute(predictions=PREDICTIONS, references=REFERENCES, num_labels=3, ignore_index=255)
    np.testing.assert_allclose(results["per_category_iou"], EXPECTED_IOU)
    np.testing.assert_allclose(results["per_category_accuracy"], EXPECTED_ACCURACY)
    assert results["mean_iou"] == pytest.approx(np.mean(EXPECTED_IOU))
    assert results["mean_accuracy"] == pytest.approx(np.mean(EXPECTED_ACCURACY))
    assert results["overall_accuracy"] == pytest.approx(6 / 8)


def test_batches_accumulate_areas_over_the_whole_set(metric):
    """mmseg's definition: areas summed over images, then divided (not a mean of per-image IoUs)."""
    for prediction, reference in zip(PREDICTIONS, REFERENCES):
        metric.add(predictions=prediction, references=reference)
    results = metric.compute(num_labels=3)
    np.testing.assert_allclose(results["per_category_iou"], EXPECTED_IOU)


def test_absent_classes_are_nan_and_left_out_of_the_means(metric):
    results = metric.compute(predictions=PREDICTIONS, references=REFERENCES, num_labels=5)
    assert np.isnan(results["per_category_iou"][3:]).all() and np.isnan(results["per_category_accuracy"][3:]).all()
    assert results["mean_iou"] == pytest.approx(np.mean(EXPECTED_IOU))
    filled = metric.compute(predictions=PREDICTIONS, references=REFERENCES, num_labels=5, nan_to_num=-1)
    assert list(filled["per_category_iou"][3:]) == [-1, -1]


def test_reduce_labels_ignores_zero_and_shifts_the_rest(metric):
    """ADE20K-style references: 0 is 'other' (ignored), v becomes v - 1; 255 stays ignored."""
    raw = [reference + 1 for reference in REFERENCES]
    for reference, original in zip(raw, REFERENCES):
        reference[original == 255] = 255
    raw[0][0, 0] = 0  # one more pixel, now unlabelled: class 0 loses a correct pixel
    results = metric.compute(predictions=PREDICTIONS, references=raw, num_labels=3, reduce_labels=True)
    # class 0: predicted 2 (the unlabelled pixel no longer counts), labelled 2, both 1 -> IoU 1 / 3, accuracy 1 / 2
    np.testing.assert_allclose(results["per_category_iou"], [1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(results["per_category_accuracy"], [0.5, 2 / 3, 1.0])
    assert results["overall_accuracy"] == pytest.approx(5 / 7)


def test_label_map_is_applied_before_everything(metric):
    swapped = [np.where(r == 1, 2, np.where(r == 2, 1, r)) for r in REFERENCES]
    results = metric.compute(predictions=PREDICTIONS, references=swapped, num_labels=3, label_map={1: 2, 2: 1})
    np.testing.assert_allclose(results["per_category_iou"], EXPECTED_IOU)


def test_areas_counted_on_tensors_give_the_same_metrics(metric):
    """The finetune.py path: per-image counts with `intersect_and_union` (torch, any device), summed, then
    `compute_from_areas` on the loaded module."""
    totals = torch.zeros(4, 3, dtype=torch.long)
    for prediction, reference in zip(PREDICTIONS, REFERENCES):
        areas = metric.intersect_and_union(torch.from_numpy(prediction), torch.from_numpy(reference), 3, 255)
        assert all(area.dtype == torch.long and area.shape == (3,) for area in areas)
        totals += torch.stack(areas)
    assert totals.tolist() == [[2, 2, 2], [4, 3, 3], [3, 2, 3], [3, 3, 2]]  # intersect, union, predicted, labelled
    from_areas = metric.compute_from_areas(*totals)
    from_maps = metric.compute(predictions=PREDICTIONS, references=REFERENCES, num_labels=3)
    for key, value in from_maps.items():
        np.testing.assert_allclose(from_areas[key], value)


def test_bad_inputs_say_what_is_wrong(metric):
    with pytest.raises(ValueError, match=r"reference holds class 7, outside 0..2"):
        metric.intersect_and_union(np.zeros((2, 2)), np.full((2, 2), 7), num_labels=3)
    with pytest.raises(ValueError, match=r"prediction holds class 3"):
        metric.intersect_and_union(np.full((2, 2), 3), np.zeros((2, 2)), num_labels=3)
    with pytest.raises(ValueError, match=r"shape \(2, 2\) has a reference of shape \(2, 3\)"):
        metric.intersect_and_union(np.zeros((2, 2)), np.zeros((2, 3)), num_labels=3)
    with pytest.raises(ValueError, match="No labelled pixels"):
        metric.compute_from_areas(*torch.zeros(4, 3, dtype=torch.long))
