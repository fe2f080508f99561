"""The local `evaluate` accuracy module: offline, top-1 and top-k."""

import evaluate
import pytest

from hf_localvit.metrics import load_metric, metric_path


def test_loads_from_the_package_folder_without_the_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(metric_path("accuracy"), keep_in_memory=True)
    assert metric.compute(predictions=[0, 1, 1], references=[0, 1, 0]) == {"accuracy": pytest.approx(2 / 3)}


def test_ranked_predictions_give_top_k():
    metric = load_metric("accuracy")
    ranked = [[3, 1, 0, 2, 4, 5], [1, 2, 3, 4, 5, 0], [2, 0, 1, 3, 4, 5]]
    results = metric.compute(predictions=ranked, references=[3, 0, 5], top_k=[2, 5])
    assert results == {
        "accuracy": pytest.approx(1 / 3),
        "top2_accuracy": pytest.approx(1 / 3),
        "top5_accuracy": pytest.approx(1 / 3),
    }
    assert metric.compute(predictions=ranked, references=[3, 0, 5], top_k=[6])["top6_accuracy"] == 1.0


def test_top_k_longer_than_the_ranking_is_left_out():
    metric = load_metric("accuracy")
    results = metric.compute(predictions=[[0, 1, 2], [2, 1, 0]], references=[0, 1])  # 3 classes: no top-5
    assert results == {"accuracy": 0.5}


def test_batches_accumulate_over_the_whole_set():
    metric = load_metric("accuracy")
    metric.add_batch(predictions=[[1, 0, 2, 3, 4]] * 2, references=[1, 2])
    metric.add_batch(predictions=[[0, 1, 2, 3, 4]], references=[4])
    assert metric.compute() == {"accuracy": pytest.approx(1 / 3), "top5_accuracy": 1.0}


def test_weights_and_counts():
    metric = load_metric("accuracy")
    assert metric.compute(predictions=[1, 0], references=[1, 1], sample_weight=[3.0, 1.0]) == {"accuracy": 0.75}
    assert metric.compute(predictions=[1, 0, 1], references=[1, 1, 1], normalize=False) == {"accuracy": 2.0}


def test_unknown_local_metric_is_named():
    with pytest.raises(ValueError, match="Local metrics: accuracy"):
        metric_path("bleu")
