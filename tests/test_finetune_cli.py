"""`finetune.py` end to end in this process: a tiny DWNet on generated images, bad data, errors, publishing."""

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from huggingface_hub import constants

import hf_localvit  # noqa: F401  (Auto classes)
from hf_localvit import hub
from hf_localvit.training import parse_args
from hf_localvit.training.testing import run_in_process, save_tiny_model, shapes_dataset, write_image_folder


pytestmark = pytest.mark.usefixtures("offline_fine_tuning")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny-dwnet", num_labels=5)


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("data") / "shapes", train_per_class=16, validation_per_class=4)


def _common(model, dataset, output, *extra):
    return [
        "--model", str(model), "--dataset", str(dataset), "--output-dir", str(output),
        "--per-device-train-batch-size", "8", "--num-workers", "0", "--crop-scale", "0.6", "1", *extra,
    ]  # fmt: skip


def test_fine_tuning_lowers_the_loss_and_saves_a_loadable_model(tiny_model, shapes_folder, tmp_path, caplog):
    from transformers import AutoModelForImageClassification, pipeline

    output = tmp_path / "run"
    with caplog.at_level("WARNING"):
        status = run_in_process(
            _common(tiny_model, shapes_folder, output, "--max-steps", "80", "--learning-rate", "1e-3",
                    "--drop-path-rate", "0", "--logging-steps", "5", "--eval-epochs", "5")  # fmt: skip
        )
    assert status == 0
    assert "has 5 classes; the dataset has 3, so the classification head is re-initialised" in caplog.text

    results = json.loads((output / "all_results.json").read_text())
    losses = [entry["train_loss"] for entry in results["log_history"] if "train_loss" in entry]
    assert np.mean(losses[-3:]) < 0.7 * losses[0]
    assert results["eval_loss"] < np.log(3) and results["eval_accuracy"] >= 0.75
    assert results["global_step"] == 80 and results["eval_samples"] == 12 and results["train_examples"] == 48

    assert (output / "model.safetensors").is_file() and not list(output.glob("*.bin"))
    assert not [path for path in output.rglob(".tmp-*")]
    model = AutoModelForImageClassification.from_pretrained(output)
    assert model.config.id2label == {0: "blue_bar", 1: "green_disc", 2: "red_square"}
    classifier = pipeline("image-classification", model=str(output), device="cpu")
    image = Image.open(next((shapes_folder / "validation" / "green_disc").iterdir()))
    assert {p["label"] for p in classifier(image)} == {"blue_bar", "green_disc", "red_square"}

    card = (output / "README.md").read_text()
    for expected in ("## Training data", str(shapes_folder), "learning_rate | 0.001", "eval_accuracy", "imagefolder"):
        assert expected in card


def test_save_to_disk_dataset_with_carved_validation_mixup_and_accumulation(tiny_model, tmp_path):
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": shapes_dataset(train_rows=40)["train"]}).save_to_disk(saved)
    output = tmp_path / "run"
    status = run_in_process(
        _common(tiny_model, saved, output, "--num-epochs", "2", "--gradient-accumulation-steps", "2",
                "--mixup", "0.8", "--cutmix", "1.0", "--validation-fraction", "0.25", "--lr-scheduler-type", "linear",
                "--per-device-eval-batch-size", "3", "--auto-augment", "trivial")  # fmt: skip
    )
    assert status == 0
    results = json.loads((output / "all_results.json").read_text())
    # 30 training rows: 3 batches of 8 per epoch, so 2 optimizer steps per epoch (the last one flushes 1 batch)
    assert (results["train_examples"], results["eval_samples"], results["global_step"]) == (30, 10, 4)
    assert {"accuracy", "top5_accuracy"}.isdisjoint(results)  # metrics are prefixed
    assert "eval_top5_accuracy" not in results  # 3 classes: top-5 does not apply
    assert sorted(path.name for path in (output / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]


def _folder_with(tmp_path, images: dict[str, Image.Image | bytes]) -> Path:
    root = write_image_folder(tmp_path / "data", train_per_class=4, validation_per_class=2)
    for name, content in images.items():
        path = root / "train" / "red_square" / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            content.save(path)
    return root


def _modes_images():
    palette = Image.new("P", (32, 32), 1)
    palette.info["transparency"] = 0
    return {
        "grey.png": Image.new("L", (32, 32), 200),
        "rgba.png": Image.new("RGBA", (32, 32), (200, 0, 0, 128)),
        "palette.png": palette,
        "cmyk.jpg": Image.new("CMYK", (32, 32), (0, 255, 255, 0)),
        "sixteen.png": Image.fromarray(np.full((32, 32), 40000, dtype=np.uint16)),
    }


def test_any_image_mode_trains(tiny_model, tmp_path):
    root = _folder_with(tmp_path, _modes_images())
    assert run_in_process(_common(tiny_model, root, tmp_path / "run", "--max-steps", "3")) == 0
    assert json.loads((tmp_path / "run" / "all_results.json").read_text())["train_examples"] == 17


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_image_stops_the_run_with_its_name(tiny_model, tmp_path, capsys, workers):
    root = _folder_with(tmp_path, {"broken.png": b"\x89PNG\r\n\x1a\n-truncated"})
    argv = _common(tiny_model, root, tmp_path / "run", "--max-steps", "3", "--num-workers", str(workers))
    assert run_in_process(argv) == 2
    error = capsys.readouterr().err
    assert "finetune.py: error: Image" in error and "of split 'train' (file '" in error and "broken.png" in error
    assert "--skip-bad-images" in error and "Traceback" not in error
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_skip_bad_images_leaves_them_out(tiny_model, tmp_path, caplog):
    good = Image.new("RGB", (32, 32), (200, 0, 0))
    buffer = __import__("io").BytesIO()
    good.save(buffer, "PNG")
    root = _folder_with(tmp_path, {"broken.png": b"not an image", "truncated.png": buffer.getvalue()[:60]})
    with caplog.at_level("WARNING"):
        status = run_in_process(_common(tiny_model, root, tmp_path / "run", "--max-steps", "2", "--skip-bad-images"))
    assert status == 0
    assert "Skipping 2 unreadable image(s) of split 'train'" in caplog.text
    assert json.loads((tmp_path / "run" / "all_results.json").read_text())["train_examples"] == 12


def _saved(tmp_path, dsd):
    dsd.save_to_disk(tmp_path / "saved")
    return tmp_path / "saved"


def test_missing_label_column_lists_the_columns(tiny_model, tmp_path, capsys):
    shapes = shapes_dataset(train_rows=6, validation_rows=3).rename_column("shape", "caption")
    shapes = shapes.cast_column("caption", datasets.Value("string"))
    assert run_in_process(_common(tiny_model, _saved(tmp_path, shapes), tmp_path / "run")) == 2
    error = capsys.readouterr().err
    assert "Could not find the label column. The dataset's columns are: img, caption" in error
    assert "--label-column" in error


def test_empty_split_says_so(tiny_model, tmp_path, capsys):
    root = write_image_folder(tmp_path / "data", train_per_class=2, validation_per_class=0)
    for name in ("a.png", "b.png"):
        (root / "validation" / "red_square" / name).write_bytes(b"not an image")
    argv = _common(tiny_model, root, tmp_path / "run", "--skip-bad-images")
    assert run_in_process(argv) == 2
    assert "Split 'validation (after skipping unreadable images)' is empty (0 rows)" in capsys.readouterr().err


def test_string_labels_and_named_columns(tiny_model, tmp_path):
    shapes = shapes_dataset(train_rows=9, validation_rows=3)
    shapes = shapes.map(lambda row: {"kind": ["cat", "dog", "emu"][row["shape"]]}).remove_columns("shape")
    output = tmp_path / "run"
    argv = _common(tiny_model, _saved(tmp_path, shapes), output, "--max-steps", "1", "--label-column", "kind",
                   "--image-column", "img", "--per-device-train-batch-size", "4")  # fmt: skip
    assert run_in_process(argv) == 0
    assert json.loads((output / "config.json").read_text())["id2label"] == {"0": "cat", "1": "dog", "2": "emu"}


def test_existing_checkpoints_need_resume_or_overwrite(tiny_model, shapes_folder, tmp_path, capsys):
    output = tmp_path / "run"
    argv = _common(tiny_model, shapes_folder, output, "--max-steps", "2")
    assert run_in_process([*argv, "--checkpoint-steps", "1"]) == 0
    assert run_in_process(argv) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert run_in_process([*argv, "--overwrite-output-dir"]) == 0
    # a finished run resumed from its last checkpoint has nothing left to train
    assert run_in_process([*argv, "--resume-from-checkpoint"]) == 0
    assert json.loads((output / "all_results.json").read_text())["resumed_from"].endswith("checkpoint-2")


def test_push_to_hub_without_a_token_fails_before_training(tiny_model, shapes_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(hub, "get_token", lambda: None)
    argv = _common(tiny_model, shapes_folder, tmp_path / "run", "--push-to-hub", "me/model")
    assert run_in_process(argv) == 2
    assert "No Hugging Face token found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_push_to_hub_offline_fails_before_training(tiny_model, shapes_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(hub, "get_token", lambda: "hf_test")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    argv = _common(tiny_model, shapes_folder, tmp_path / "run", "--push-to-hub", "me/model")
    assert run_in_process(argv) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_arguments(tmp_path):
    demo = parse_args(["--output-dir", str(tmp_path)])
    assert (demo.model, demo.hflip, demo.predict_examples, demo.image_size) == ("dwnet-demo", False, 6, None)
    custom = parse_args([
        "--model", "dwnet-tiny", "--dataset", "cifar10", "--output-dir", "x", "--resume-from-checkpoint",
        "--report-to", "tensorboard", "--lr", "3e-4", "--epochs", "2",
    ])  # fmt: skip
    assert custom.resume_from_checkpoint == "latest" and custom.report_to == ["tensorboard"]
    assert (custom.learning_rate, custom.num_epochs, custom.hflip, custom.predict_examples) == (3e-4, 2, True, 0)
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "cifar10", "--output-dir", "x"])  # --model is required with --dataset


def test_real_preset_with_tensorboard_and_push_to_hub(shapes_folder, tmp_path, monkeypatch):
    uploads = {}

    class FakeApi:
        def __init__(self, endpoint, token):
            uploads["token"] = token

        def create_repo(self, repo_id, **kwargs):
            uploads["repo"] = (repo_id, kwargs["private"])
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, folder_path, allow_patterns, **kwargs):
            uploads["files"] = sorted(allow_patterns)
            return "https://huggingface.co/me/shapes/commit/1"

    monkeypatch.setattr(hub, "get_token", lambda: "hf_test")
    monkeypatch.setattr(hub, "HfApi", FakeApi)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    output = tmp_path / "run"
    argv = [
        "--model", "dwnet-tiny", "--image-size", "32", "--dataset", str(shapes_folder), "--output-dir", str(output),
        "--max-steps", "1", "--per-device-train-batch-size", "4", "--num-workers", "0", "--max-eval-samples", "4",
        "--report-to", "tensorboard", "--push-to-hub", "me/shapes", "--hub-private",
    ]  # fmt: skip
    assert run_in_process(argv) == 0
    config = json.loads((output / "config.json").read_text())
    assert (config["embed_dim"], config["depths"], config["image_size"]) == (96, [2, 2, 6, 2], 32)
    assert len(config["id2label"]) == 3
    assert json.loads((output / "preprocessor_config.json").read_text())["size"] == {"shortest_edge": 32}
    assert list((output / "runs").rglob("events.out.tfevents*"))
    assert uploads["token"] == "hf_test" and uploads["repo"] == ("me/shapes", True)
    # the shared publish path: weights, configs, card and remote code; never metrics, logs or checkpoints
    sent = set(uploads["files"])
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md", "modeling_dwnet.py"} <= sent
    assert not sent & {"all_results.json", "runs/"} and all(not name.startswith("checkpoint") for name in sent)
    assert 'pipeline("image-classification", model="me/shapes")' in (output / "README.md").read_text()
