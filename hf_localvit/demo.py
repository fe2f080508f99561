"""`make demo`: the main job end to end, offline.

1. Convert an original-format DWNet checkpoint with the converter, reload it through the Auto classes, check it
   against the original implementation's logits, and classify a photo with `pipeline("image-classification")`.
2. Fine-tune a DWNet on the handwritten digits shipped with scikit-learn with `accelerate launch finetune.py`,
   then classify held-out digits with the fine-tuned model's pipeline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "reference"
DEMO_CHECKPOINT = "i_dynamic_dwnet_small_cls"


def demo_conversion(output_root: Path) -> None:
    """Convert -> save -> reload with Auto classes -> parity with the original -> pipeline on a photo."""
    from safetensors.torch import load_file
    from sklearn.datasets import load_sample_image
    from PIL import Image
    from transformers import AutoModelForImageClassification, pipeline

    from hf_localvit.convert.dwnet import convert_dwnet_checkpoint

    checkpoint = REFERENCE_DIR / f"{DEMO_CHECKPOINT}.pth"
    if not checkpoint.is_file():
        print(f"[convert] {checkpoint} not found: skipping the conversion demo.")
        return
    output_dir = output_root / "converted" / DEMO_CHECKPOINT
    shutil.rmtree(output_dir, ignore_errors=True)
    convert_dwnet_checkpoint(str(checkpoint), output_dir)
    print(f"[convert] {checkpoint.name} -> {output_dir} ({', '.join(sorted(p.name for p in output_dir.iterdir()))})")

    model = AutoModelForImageClassification.from_pretrained(output_dir).eval()
    reference = load_file(REFERENCE_DIR / f"{DEMO_CHECKPOINT}_io.safetensors")
    with torch.no_grad():
        difference = (model(reference["pixel_values"]).logits - reference["logits"]).abs().max().item()
    print(f"[convert] reloaded {type(model).__name__} ({model.config.mixer} mixer); "
          f"max |logits - original| = {difference:.2e}")

    classifier = pipeline("image-classification", model=str(output_dir), device="cpu")
    photo = Image.fromarray(load_sample_image("china.jpg"))
    print("[convert] pipeline on scikit-learn's sample photo (random-weight checkpoint, so labels are arbitrary):")
    for prediction in classifier(photo, top_k=3):
        print(f"    {prediction['label']:>10s}  {prediction['score']:.3f}")


def demo_finetuning(output_root: Path) -> None:
    """Fine-tune on the embedded digits data with Accelerate and classify held-out digits."""
    output_dir = output_root / "finetune-digits"
    shutil.rmtree(output_dir, ignore_errors=True)
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        str(REPO_ROOT / "finetune.py"), "--cpu", "--output-dir", str(output_dir),
    ]
    print("[finetune] " + " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", default="demo_output", help="Where the demo writes its models.")
    parser.add_argument("--skip-finetune", action="store_true", help="Only run the conversion demo.")
    args = parser.parse_args(argv)
    output_root = Path(args.output_dir)
    output_root.mkdir(parents=True, exist_ok=True)
    demo_conversion(output_root)
    if not args.skip_finetune and (REPO_ROOT / "finetune.py").is_file():
        demo_finetuning(output_root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
