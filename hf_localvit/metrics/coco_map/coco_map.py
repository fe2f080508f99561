"""COCO mean average precision (box and mask) as a local `evaluate` module, computed by pycocotools.

Load it with `evaluate.load(path_to_this_folder)` or `hf_localvit.metrics.load_metric("coco_map")`.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
COCO-style mean average precision: AP averaged over the IoU thresholds 0.50:0.05:0.95 and over the categories with
ground truth, plus AP at IoU 0.5 and 0.75 and AP of small (< 32^2 pixels), medium and large objects, computed by the
official pycocotools `COCOeval` with up to 100 detections per image. Boxes are always evaluated; instance masks
(COCO run-length encoding) too when every image gives one mask per box in both predictions and references.
Ground truths marked `iscrowd` are crowd regions: detections on them are neither true nor false positives.
A value of -1 means there was nothing to evaluate (e.g. no ground truth of that size).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `dict`): Per image, paired with `references` (one each, same order):
        image_id (`int`): Identifies the image; must match one reference.
        boxes (`list` of 4 `float`): (x1, y1, x2, y2) pixel boxes in the original image.
        scores (`list` of `float`), labels (`list` of `int`): One score and class id per box.
        masks (`list` of `dict`, optional): One COCO RLE (`{"size": [height, width], "counts": str}`) per box.
    references (`list` of `dict`): Per image:
        image_id (`int`), height (`int`), width (`int`): The image and its size.
        boxes (`list` of 4 `float`), labels (`list` of `int`): The ground-truth (x1, y1, x2, y2) boxes and classes.
        iscrowd (`list` of `int`, optional): 1 for crowd regions (default: all 0).
        area (`list` of `float`, optional): Object areas for the small/medium/large split (default: the mask area
            when masks are given, else the box area).
        masks (`list` of `dict`, optional): One COCO RLE per box.
    iou_types (`list` of `str`, optional): "bbox" and/or "segm"; default: "bbox", and "segm" when masks are given.
    max_detections (`int`, optional, defaults to 100): Detections per image kept (best scores first).
Returns:
    map, map_50, map_75, map_small, map_medium, map_large (`float`): Box AP; for masks the same with a `mask_`
    prefix (mask_map, mask_map_50, ...).
Examples:
    >>> metric = evaluate.load("hf_localvit/metrics/coco_map")
    >>> box = [10.0, 10.0, 50.0, 60.0]
    >>> results = metric.compute(
    ...     predictions=[{"image_id": 0, "boxes": [box], "scores": [0.9], "labels": [1]}],
    ...     references=[{"image_id": 0, "height": 100, "width": 100, "boxes": [box], "labels": [1]}],
    ... )
    >>> round(results["map"], 6)
    1.0
"""

_CITATION = """
@inproceedings{lin2014microsoft,
  title={Microsoft COCO: Common Objects in Context},
  author={Lin, Tsung-Yi and Maire, Michael and Belongie, Serge and Hays, James and Perona, Pietro and Ramanan, Deva
    and Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  booktitle={ECCV},
  year={2014}
}
"""

_RLE = {"size": [datasets.Value("int64")], "counts": datasets.Value("string")}
_BOXES = [[datasets.Value("float64")]]
_FEATURES = datasets.Features(
    {
        "predictions": {
            "image_id": datasets.Value("int64"),
            "boxes": _BOXES,
            "scores": [datasets.Value("float64")],
            "labels": [datasets.Value("int64")],
            "masks": [_RLE],
        },
        "references": {
            "image_id": datasets.Value("int64"),
            "height": datasets.Value("int64"),
            "width": datasets.Value("int64"),
            "boxes": _BOXES,
            "labels": [datasets.Value("int64")],
            "iscrowd": [datasets.Value("int64")],
            "area": [datasets.Value("float64")],
            "masks": [_RLE],
        },
    }
)
_OPTIONAL = {"predictions": ("masks",), "references": ("iscrowd", "area", "masks")}
# The reported values: (IoU threshold, or None for the mean over 0.50:0.05:0.95; area range), as COCOeval's first six
# `stats`, all at the last (largest) `maxDets`.
_STATS = {
    "map": (None, "all"),
    "map_50": (0.5, "all"),
    "map_75": (0.75, "all"),
    "map_small": (None, "small"),
    "map_medium": (None, "medium"),
    "map_large": (None, "large"),
}
_PREFIX = {"bbox": "", "segm": "mask_"}


def _as_plain(value: Any) -> Any:
    """numpy arrays / tensors / bytes to lists and str, so the inputs fit the Arrow schema."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("ascii")
    if isinstance(value, dict):
        return {key: _as_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_plain(item) for item in value]
    return value


def _complete(records: Any, kind: str) -> Any:
    """Fill the optional fields left out (None or missing) with empty lists."""
    if records is None:
        return None
    completed = []
    for record in records:
        record = _as_plain(dict(record))
        for name in _OPTIONAL[kind]:
            if record.get(name) is None:
                record[name] = []
        completed.append(record)
    return completed


def _xywh(boxes: list[list[float]]) -> list[list[float]]:
    return [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in boxes]


def _mask_state(records: list[dict], kind: str) -> bool | None:
    """True when every image with boxes gives one mask per box, False when none does, None when no image has boxes;
    an error when only some images give masks."""
    given = [len(record["masks"]) == len(record["boxes"]) for record in records if record["boxes"]]
    if any(given) and not all(given):
        bad = next(record["image_id"] for record in records if record["boxes"] and not record["masks"])
        raise ValueError(
            f"{kind}: image {bad} gives no masks while other images do. Give one RLE mask per box for every image, "
            "or masks for none."
        )
    return all(given) if given else None


def _average_precision(evaluation: Any, iou: float | None, area: str) -> float:
    """COCOeval.summarize's AP at `params.maxDets[-1]` detections per image. `summarize()` itself reads the headline
    AP (`stats[0]`) at 100 detections whatever `maxDets` is, so it gives -1 when `max_detections` is not 100."""
    params = evaluation.params
    precision = evaluation.eval["precision"]  # (IoU thresholds, recall points, categories, area ranges, maxDets)
    precision = precision[:, :, :, params.areaRngLbl.index(area), len(params.maxDets) - 1]
    if iou is not None:
        precision = precision[np.isclose(params.iouThrs, iou)]
    valid = precision[precision > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _coco(dataset: dict) -> Any:
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _check_record(record: dict, kind: str, fields: tuple[str, ...]) -> None:
    count = len(record["boxes"])
    if any(len(box) != 4 for box in record["boxes"]):
        raise ValueError(f"{kind}: image {record['image_id']} has a box without 4 coordinates (x1, y1, x2, y2).")
    for field in fields:
        if field in _OPTIONAL[kind] and not record[field]:
            continue
        if len(record[field]) != count:
            raise ValueError(
                f"{kind}: image {record['image_id']} has {count} boxes but {len(record[field])} {field}; give one "
                "per box."
            )


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CocoMap(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=_FEATURES,
            reference_urls=["https://cocodataset.org/#detection-eval", "https://github.com/cocodataset/cocoapi"],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of per-image predictions and references; optional fields may be left out."""
        super().add_batch(
            predictions=_complete(predictions, "predictions"), references=_complete(references, "references"), **kwargs
        )

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one image's predictions and reference; optional fields may be left out."""
        prediction = None if prediction is None else _complete([prediction], "predictions")[0]
        reference = None if reference is None else _complete([reference], "references")[0]
        super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(self, predictions, references, iou_types=None, max_detections=100):
        from pycocotools import mask as mask_utils
        from pycocotools.cocoeval import COCOeval

        if not references:
            raise ValueError("COCO mAP of an empty evaluation set is undefined: no references were given.")
        for record in references:
            _check_record(record, "references", ("labels", "iscrowd", "area", "masks"))
        for record in predictions:
            _check_record(record, "predictions", ("scores", "labels", "masks"))
        if isinstance(max_detections, bool) or not isinstance(max_detections, int) or max_detections < 1:
            raise ValueError(f"max_detections must be a positive integer, got {max_detections!r}.")
        image_ids = {}
        for kind, records in (("references", references), ("predictions", predictions)):
            image_ids[kind] = [record["image_id"] for record in records]
            if len(set(image_ids[kind])) != len(image_ids[kind]):
                raise ValueError(f"{kind}: image ids must be unique (each image once).")
        unknown = set(image_ids["predictions"]) - set(image_ids["references"])
        if unknown:
            raise ValueError(f"predictions for image ids {sorted(unknown)[:10]} that have no reference.")
        if iou_types is not None:
            iou_types = [iou_types] if isinstance(iou_types, str) else list(iou_types)
            unknown_types = set(iou_types) - set(_PREFIX)
            if unknown_types:
                raise ValueError(f"Unknown iou_types {sorted(unknown_types)}: use 'bbox' and/or 'segm'.")
        if iou_types is None or "segm" in iou_types:
            masked = _mask_state(references, "references"), _mask_state(predictions, "predictions")
            if iou_types is None:
                iou_types = ["bbox", "segm"] if False not in masked and any(masked) else ["bbox"]
            elif False in masked:
                kind = "references" if masked[0] is False else "predictions"
                raise ValueError(f"iou_types 'segm' needs one RLE mask per box of every image; the {kind} give none.")

        categories = sorted(
            {label for record in [*references, *predictions] for label in record["labels"]}
        )
        images = [{"id": r["image_id"], "height": r["height"], "width": r["width"]} for r in references]
        results: dict[str, float] = {}
        for iou_type in iou_types:
            segm = iou_type == "segm"
            annotations = []
            for record in references:
                boxes = _xywh(record["boxes"])
                for k, (box, label) in enumerate(zip(boxes, record["labels"])):
                    if record["area"]:
                        area = float(record["area"][k])
                    elif record["masks"]:
                        area = float(mask_utils.area(record["masks"][k]))
                    else:
                        area = float(box[2] * box[3])
                    annotation = {
                        "id": len(annotations) + 1,
                        "image_id": record["image_id"],
                        "category_id": label,
                        "bbox": box,
                        "area": area,
                        "iscrowd": int(record["iscrowd"][k]) if record["iscrowd"] else 0,
                    }
                    if segm:
                        annotation["segmentation"] = record["masks"][k]
                    annotations.append(annotation)
            detections = []
            for record in predictions:
                order = np.argsort(-np.asarray(record["scores"], dtype=np.float64), kind="stable")[:max_detections]
                boxes = _xywh(record["boxes"])
                for k in order.tolist():
                    detection = {
                        "id": len(detections) + 1,
                        "image_id": record["image_id"],
                        "category_id": record["labels"][k],
                        "bbox": boxes[k],
                        "score": float(record["scores"][k]),
                        "area": float(boxes[k][2] * boxes[k][3]),
                    }
                    if segm:
                        detection["segmentation"] = record["masks"][k]
                        detection["area"] = float(mask_utils.area(record["masks"][k]))
                    detections.append(detection)
            common = {"images": images, "categories": [{"id": c, "name": str(c)} for c in categories]}
            ground_truth = _coco({**common, "annotations": annotations})
            detected = _coco({**common, "annotations": detections})
            evaluation = COCOeval(ground_truth, detected, iou_type)
            evaluation.params.maxDets = [1, 10, max_detections]
            with contextlib.redirect_stdout(io.StringIO()):
                evaluation.evaluate()
                evaluation.accumulate()
            prefix = _PREFIX[iou_type]
            results.update(
                {prefix + name: _average_precision(evaluation, iou, area) for name, (iou, area) in _STATS.items()}
            )
        return results
