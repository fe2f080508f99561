"""Top-1 and top-k classification accuracy as a local `evaluate` module (no Hub download).

Load it with `evaluate.load(path_to_this_folder)` or `hf_localvit.metrics.load_metric("accuracy")`.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Accuracy is the fraction of examples whose predicted class is the reference class. Given ranked predictions (the class
ids sorted by decreasing score, best first), it also reports top-k accuracy: the fraction of examples whose reference
is among the first k predictions, for each requested k that the rankings are long enough for.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`, or `list` of `list` of `int`): Predicted class ids, or per example the class ids
        ranked by decreasing score (best first). Rankings must all have the same length.
    references (`list` of `int`): Reference class ids.
    top_k (`list` of `int`, optional, defaults to `[5]`): The k of the top-k accuracies to report when rankings are
        given; a k longer than the rankings is skipped (e.g. top-5 with 3 classes).
    normalize (`bool`, optional, defaults to `True`): Return fractions; with `False`, (weighted) counts.
    sample_weight (`list` of `float`, optional): Per-example weights.
Returns:
    accuracy (`float`): Top-1 accuracy.
    top{k}_accuracy (`float`): Top-k accuracy, for each k in `top_k` that applies.
Examples:
    >>> metric = evaluate.load("hf_localvit/metrics/accuracy")
    >>> metric.compute(predictions=[[1, 0, 2], [2, 1, 0]], references=[1, 1], top_k=[2])
    {'accuracy': 0.5, 'top2_accuracy': 1.0}
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("int64")),
                        "references": datasets.Value("int64"),
                    }
                ),
            ],
            reference_urls=["https://en.wikipedia.org/wiki/Accuracy_and_precision"],
        )

    def _compute(self, predictions, references, top_k=(5,), normalize=True, sample_weight=None):
        references = np.asarray(references, dtype=np.int64)
        if len(references) == 0:
            raise ValueError("Accuracy of an empty evaluation set is undefined: no predictions were given.")
        weights = np.ones(len(references)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if weights.shape != references.shape:
            raise ValueError(f"sample_weight has {weights.shape[0]} values for {references.shape[0]} references.")
        ranked = np.asarray(predictions, dtype=np.int64)
        if ranked.ndim == 1:
            ranked = ranked[:, None]
        if ranked.ndim != 2 or ranked.shape[0] != len(references) or ranked.shape[1] == 0:
            raise ValueError(
                "predictions must be one class id per example, or per example a non-empty ranking of class ids of "
                f"the same length; got an array of shape {ranked.shape} for {len(references)} references."
            )
        hits = ranked == references[:, None]
        results = {"accuracy": hits[:, 0]}
        for k in sorted(set(int(k) for k in top_k)):
            if 1 < k <= ranked.shape[1]:
                results[f"top{k}_accuracy"] = hits[:, :k].any(axis=1)
        total = weights.sum() if normalize else 1.0
        return {name: float((correct * weights).sum() / total) for name, correct in results.items()}
