"""Mean intersection-over-union (and pixel accuracies) for semantic segmentation as a local `evaluate` module.

Load it with `evaluate.load(path_to_this_folder)` or `hf_localvit.metrics.load_metric("mean_iou")`. It takes the same
arguments and returns the same keys as the Hub's `mean_iou`, and follows mmsegmentation's definition (the one the
DWNet ADE20K results use): per-class areas are summed over the whole evaluation set before dividing, and classes
that appear in neither the predictions nor the references are left out of the means.

Storing every map (as `compute(predictions=maps, ...)` does) is wasteful for large sets. `intersect_and_union`
counts one map's per-class areas in torch, on any device; sum those over the set and pass the totals to
`compute_from_areas`. `finetune.py` does this: counts are taken on each process and gathered, and only the
totals reach this module.
"""

from __future__ import annotations

from typing import Any, TypeVar

import datasets
import evaluate
import numpy as np
import torch

ArrayLike = TypeVar("ArrayLike", torch.Tensor, np.ndarray)

_DESCRIPTION = """
Intersection-over-union (IoU, the Jaccard index) of a class is the number of pixels both predicted and labelled as the
class, divided by the number of pixels predicted or labelled as it, with both counts summed over all images. Mean IoU
averages it over the classes that occur in the predictions or the references. Per-class accuracy is the fraction of a
class's labelled pixels predicted correctly; mean accuracy averages it over the classes that occur in the references;
overall accuracy is the fraction of all labelled pixels predicted correctly. Pixels labelled `ignore_index` count
nowhere.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 2-D `int` arrays): Predicted class-index maps, one per image.
    references (`list` of 2-D `int` arrays): Reference maps, each of the same size as its prediction.
    num_labels (`int`): Number of classes; predictions must lie in `0..num_labels - 1`, references too unless they
        equal `ignore_index`.
    ignore_index (`int`, optional, defaults to 255): Reference value of pixels to leave out.
    nan_to_num (`float`, optional): Replace the NaN of classes absent from predictions and references (per-class
        values) by this number.
    label_map (`dict`, optional): Reference values to replace before anything else, `{old: new}`.
    reduce_labels (`bool`, optional, defaults to `False`): ADE20K-style references where 0 means "unlabelled": 0 becomes
        `ignore_index` and every other value `v` becomes `v - 1` (the predictions are left as they are).
Returns:
    mean_iou (`float`), mean_accuracy (`float`), overall_accuracy (`float`),
    per_category_iou (`ndarray` of `num_labels` floats), per_category_accuracy (`ndarray` of `num_labels` floats).
Examples:
    >>> metric = evaluate.load("hf_localvit/metrics/mean_iou")
    >>> results = metric.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [0, 255]]], num_labels=2)
    >>> results["mean_iou"], results["overall_accuracy"]
    (0.5, 0.6666666666666666)
"""

_CITATION = """
@misc{mmseg2020,
    title={{MMSegmentation}: OpenMMLab Semantic Segmentation Toolbox and Benchmark},
    author={MMSegmentation Contributors},
    howpublished={\\url{https://github.com/open-mmlab/mmsegmentation}},
    year={2020}
}
"""


def reduce_zero_label(reference: ArrayLike, ignore_index: int = 255) -> ArrayLike:
    """ADE20K's convention: 0 ("unlabelled") becomes `ignore_index`, every other value `v` (but `ignore_index`
    itself) becomes `v - 1`. Works on tensors and numpy arrays (of a signed integer type)."""
    reduced = reference - 1
    reduced[(reference == 0) | (reference == ignore_index)] = ignore_index
    return reduced


def intersect_and_union(
    prediction: Any,
    reference: Any,
    num_labels: int,
    ignore_index: int = 255,
    label_map: dict[int, int] | None = None,
    reduce_labels: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class pixel counts of one map: `area_intersect`, `area_union`, `area_pred_label`, `area_label` (each an
    int64 tensor of `num_labels` values, on the device of `prediction` when it is a tensor)."""
    prediction = torch.as_tensor(np.asarray(prediction) if not isinstance(prediction, torch.Tensor) else prediction)
    reference = torch.as_tensor(np.asarray(reference) if not isinstance(reference, torch.Tensor) else reference)
    prediction = prediction.long()
    reference = reference.to(device=prediction.device, dtype=torch.long)
    if prediction.shape != reference.shape:
        raise ValueError(
            f"A prediction of shape {tuple(prediction.shape)} has a reference of shape {tuple(reference.shape)}; "
            "each prediction must be the size of its reference (resize the logits to the reference first)."
        )
    if label_map:
        mapped = reference.clone()
        for old, new in label_map.items():
            mapped[reference == old] = new
        reference = mapped
    if reduce_labels:
        reference = reduce_zero_label(reference, ignore_index)
    valid = reference != ignore_index
    prediction, reference = prediction[valid], reference[valid]
    for name, values in (("prediction", prediction), ("reference", reference)):
        if values.numel() and (int(values.min()) < 0 or int(values.max()) >= num_labels):
            raise ValueError(
                f"A {name} holds class {int(values.min()) if int(values.min()) < 0 else int(values.max())}, "
                f"outside 0..{num_labels - 1} (num_labels={num_labels}, ignore_index={ignore_index}). Check "
                "num_labels, ignore_index and reduce_labels."
            )
    area_intersect = torch.bincount(prediction[prediction == reference], minlength=num_labels)
    area_pred_label = torch.bincount(prediction, minlength=num_labels)
    area_label = torch.bincount(reference, minlength=num_labels)
    return area_intersect, area_pred_label + area_label - area_intersect, area_pred_label, area_label


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator.astype(np.float64) / denominator.astype(np.float64)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoU(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                }
            ),
            reference_urls=["https://github.com/open-mmlab/mmsegmentation"],
        )

    # Static, so callers of `evaluate.load(...)` reach them on the loaded module without importing this file.
    intersect_and_union = staticmethod(intersect_and_union)
    reduce_zero_label = staticmethod(reduce_zero_label)

    @staticmethod
    def compute_from_areas(
        area_intersect: Any,
        area_union: Any,
        area_pred_label: Any,
        area_label: Any,
        nan_to_num: float | None = None,
    ) -> dict[str, Any]:
        """The metrics from per-class areas summed over a whole evaluation set (as `intersect_and_union` counts
        them). `area_pred_label` is only checked for length: IoU needs the union, accuracy the labelled area."""
        given = (area_intersect, area_union, area_pred_label, area_label)
        areas = [np.asarray(torch.as_tensor(area).cpu(), dtype=np.int64) for area in given]
        if len({area.shape for area in areas}) != 1 or areas[0].ndim != 1:
            shapes = [area.shape for area in areas]
            raise ValueError(f"The four areas must be vectors of one length; got shapes {shapes}.")
        intersect, union, _, label = areas
        if label.sum() == 0:
            raise ValueError("No labelled pixels: every reference pixel is ignore_index (or nothing was given).")
        per_category_iou = _ratio(intersect, union)
        per_category_accuracy = _ratio(intersect, label)
        results = {
            "mean_iou": float(np.nanmean(per_category_iou)),
            "mean_accuracy": float(np.nanmean(per_category_accuracy)),
            "overall_accuracy": float(intersect.sum() / label.sum()),
            "per_category_iou": per_category_iou,
            "per_category_accuracy": per_category_accuracy,
        }
        if nan_to_num is not None:
            for key in ("per_category_iou", "per_category_accuracy"):
                results[key] = np.nan_to_num(results[key], nan=nan_to_num)
        return results

    def _compute(
        self,
        predictions,
        references,
        num_labels: int,
        ignore_index: int = 255,
        nan_to_num: float | None = None,
        label_map: dict[int, int] | None = None,
        reduce_labels: bool = False,
    ) -> dict[str, Any]:
        if len(predictions) == 0:
            raise ValueError("Mean IoU of an empty evaluation set is undefined: no predictions were given.")
        totals = torch.zeros(4, num_labels, dtype=torch.long)
        for prediction, reference in zip(predictions, references):
            areas = intersect_and_union(prediction, reference, num_labels, ignore_index, label_map, reduce_labels)
            totals += torch.stack(areas)
        return self.compute_from_areas(*totals, nan_to_num=nan_to_num)
