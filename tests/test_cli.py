"""The `hf-localvit` command line."""

from __future__ import annotations

import numpy as np
from PIL import Image

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
