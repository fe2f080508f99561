"""The `hf-localvit` command line."""

from __future__ import annotations

import numpy as np
import pytest
from huggingface_hub import ModelCard, constants
from PIL import Image
from test_hub import FakeHub, save_publishable_folder

import hf_localvit.cli as cli
from hf_localvit.cli import main


def test_convert_then_predict(reference_dir, tmp_path, capsys):
    output_dir = tmp_path / "model"
    assert main(["convert", "--checkpoint", str(reference_dir / "dynamic_dwnet_small_cls.pth"),
                 "--output-dir", str(output_dir)]) == 0
    image_path = tmp_path / "image.png"
    Image.fromarray((np.random.default_rng(0).random((70, 90, 3)) * 255).astype("uint8")).save(image_path)
    capsys.readouterr()
    assert main(["predict", str(image_path), "--model", str(output_dir), "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == str(image_path)
    assert [line.split()[0] for line in lines[1:]] == ["1.", "2.", "3."]
    scores = [float(line.split()[-1]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True)


def test_predict_reports_unreadable_images(reference_dir, tmp_path, capsys):
    output_dir = tmp_path / "model"
    main(["convert", "--checkpoint", str(reference_dir / "dwnet_small_cls.pth"), "--output-dir", str(output_dir)])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    assert main(["predict", str(broken), "--model", str(output_dir)]) == 1
    assert "cannot read image" in capsys.readouterr().err


def test_convert_errors_exit_non_zero(tmp_path, capsys):
    assert main(["convert", "--checkpoint", str(tmp_path / "missing.pth"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------- publish, card,
# benchmark, help


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("convert", "publish", "predict", "benchmark", "card"):
        assert command in out


def test_publish_without_token_fails_clearly_and_sends_nothing(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "model"
    save_publishable_folder(folder, with_card=False)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    with FakeHub() as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        status = main(["publish", str(folder), "--repo-id", "org/dwnet-tiny"])
    assert status != 0
    err = capsys.readouterr().err
    assert "No Hugging Face token found" in err and "hf auth login" in err and "HF_TOKEN" in err
    assert hub.requests == []
    assert not (folder / "README.md").exists()


def test_publish_dry_run_and_bad_folder(tmp_path, capsys):
    folder = tmp_path / "model"
    save_publishable_folder(folder, with_card=False)
    assert main(["publish", str(folder), "--repo-id", "org/x", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Would upload to org/x: config.json, configuration_dwnet.py, fusion_dwnet.py, model.safetensors" in out
    assert "Left out: checkpoint-10/, optimizer.pt, pytorch_model.bin" in out
    assert main(["publish", str(tmp_path), "--repo-id", "org/x"]) == 2
    assert "has no config.json" in capsys.readouterr().err


def test_card_command_prints_and_writes(tmp_path, capsys):
    assert main(["card", "dynamic-dwnet-tiny", "--org", "my-org"]) == 0
    card = ModelCard(capsys.readouterr().out)
    assert card.data.eval_results[0].metric_value == 81.8
    assert 'model="my-org/dynamic-dwnet-tiny"' in card.text

    assert main(["card", "upernet-dwnet-base", "--repo-id", "me/seg", "--output", str(tmp_path)]) == 0
    written = ModelCard.load(tmp_path / "README.md")
    assert written.data.pipeline_tag == "image-segmentation" and 'model="me/seg"' in written.text

    assert main(["card", "--list"]) == 0
    assert "cascade-mask-rcnn-dynamic-dwnet-base" in capsys.readouterr().out
    assert main(["card", "resnet-50"]) == 2
    assert "card --list" in capsys.readouterr().err


def test_benchmark_forwards_its_arguments(tmp_path, monkeypatch, capsys):
    script = tmp_path / "bench" / "throughput.py"
    script.parent.mkdir()
    script.write_text("import sys\nprint('ARGS', sys.argv[1:])\nif __name__ == '__main__':\n    sys.exit(3)\n")
    monkeypatch.setattr(cli, "benchmark_script_candidates", lambda: [tmp_path / "missing.py", script])
    assert main(["benchmark", "--models", "dwnet-tiny", "--help"]) == 3
    assert "ARGS ['--models', 'dwnet-tiny', '--help']" in capsys.readouterr().out

    monkeypatch.setattr(cli, "benchmark_script_candidates", lambda: [tmp_path / "missing.py"])
    assert main(["benchmark"]) == 2
    assert "bench/throughput.py was not found" in capsys.readouterr().err


def test_benchmark_runs_the_real_script(capsys):
    if not any(path.is_file() for path in cli.benchmark_script_candidates()):
        pytest.skip("bench/throughput.py is not in this checkout")
    assert main(["benchmark", "--help"]) == 0
    assert "usage:" in capsys.readouterr().out


def test_convert_push_to_hub_goes_through_publish(reference_dir, tmp_path, monkeypatch, capsys):
    """The converter's --push-to-hub uses the same upload path (against the loopback fake Hub)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")
    output_dir = tmp_path / "model"
    with FakeHub() as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        assert main(["convert", "--checkpoint", str(reference_dir / "dynamic_dwnet_small_cls.pth"),
                     "--output-dir", str(output_dir), "--push-to-hub", "org/converted"]) == 0
    assert f"Published: {hub.url}/org/converted" in capsys.readouterr().out
    assert sorted(hub.committed_files()) == sorted(
        ["config.json", "configuration_dwnet.py", "fusion_dwnet.py", "model.safetensors", "modeling_dwnet.py",
         "ops_dwnet.py", "preprocessor_config.json"]
    )
