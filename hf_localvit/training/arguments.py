"""Command-line interface of `finetune.py`: the options shared by every task, plus those each task adds."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from transformers import SchedulerType

from .schedules import STEP_SCHEDULE

DEFAULT_TASK = "image-classification"
# The transformers schedules that need nothing but warm-up and total steps.
SCHEDULERS = [
    kind.value
    for kind in SchedulerType
    if kind.value
    in ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt")
] + [STEP_SCHEDULE]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def add_common_arguments(parser: argparse.ArgumentParser, task_names: Sequence[str]) -> None:
    parser.add_argument("--task", default=DEFAULT_TASK, choices=list(task_names), help="What to fine-tune for.")

    group = parser.add_argument_group("model and data")
    group.add_argument(
        "--model",
        help="A preset name (random initialisation; e.g. dwnet-tiny), a local folder or a Hub model id (loaded with "
        "from_pretrained; a head with a different number of labels is re-initialised).",
    )
    group.add_argument(
        "--dataset",
        help="A Hub dataset id, a local folder of images (one sub-folder per class, optionally inside "
        "train/validation/test folders) or a folder written by Dataset.save_to_disk. Without it: the offline "
        "scikit-learn digits demo.",
    )
    group.add_argument("--dataset-config", help="Configuration name of a Hub dataset with several.")
    group.add_argument("--dataset-revision", help="Branch, tag or commit of a Hub dataset.")
    group.add_argument("--train-split", default="train", help="Split to train on (default: %(default)s).")
    group.add_argument(
        "--validation-split",
        help="Split to evaluate on (default: validation/valid/val/dev if present, else one carved off the training "
        "split).",
    )
    group.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        help="Fraction of the training split carved off for validation when there is no validation split "
        "(default: %(default)s; seeded by --seed).",
    )
    group.add_argument("--image-column", help="Column holding the images (default: detected).")
    group.add_argument("--max-train-samples", type=_positive_int, help="Train on a seeded random subset of this size.")
    group.add_argument(
        "--max-eval-samples", type=_positive_int, help="Evaluate on a seeded random subset of this size."
    )
    group.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="Check every image first and leave unreadable or truncated ones out (each is logged with its index). "
        "Without it, the first unreadable image stops the run with an error naming it.",
    )
    group.add_argument(
        "--image-size", type=_positive_int, help="Training resolution of a preset model (default: 224)."
    )
    group.add_argument("--drop-path-rate", type=float, help="Stochastic depth rate (default: the model's).")
    group.add_argument("--trust-remote-code", action="store_true", help="Allow models/datasets with custom code.")
    group.add_argument("--output-dir", required=True, help="Where the model, metrics and checkpoints are written.")
    group.add_argument(
        "--overwrite-output-dir",
        action="store_true",
        help="Start afresh even if DIR holds checkpoints of an earlier run (they are deleted).",
    )

    group = parser.add_argument_group("optimisation")
    group.add_argument("--num-epochs", "--epochs", type=_positive_int, default=10, help="Default: %(default)s.")
    group.add_argument(
        "--max-steps", type=_positive_int, help="Total optimizer steps; overrides --num-epochs when given."
    )
    group.add_argument(
        "--per-device-train-batch-size", "--batch-size", type=_positive_int, default=32, help="Default: %(default)s."
    )
    group.add_argument(
        "--per-device-eval-batch-size", type=_positive_int, help="Default: the training batch size."
    )
    group.add_argument("--gradient-accumulation-steps", type=_positive_int, default=1, help="Default: %(default)s.")
    group.add_argument("--learning-rate", "--lr", type=float, default=1e-4, help="Peak AdamW learning rate.")
    group.add_argument("--weight-decay", type=_non_negative_float, default=0.05, help="AdamW weight decay (not on "
                       "biases and norms). Default: %(default)s.")
    group.add_argument(
        "--lr-scheduler-type",
        "--lr-scheduler",
        default="cosine",
        choices=SCHEDULERS,
        help="transformers get_scheduler schedule, or 'step' (mmdetection's: x0.1 at 27/36 and 33/36 of the steps) "
        "(default: %(default)s).",
    )
    group.add_argument("--warmup-steps", type=_non_negative_int, help="Linear warm-up steps (overrides the ratio).")
    group.add_argument("--warmup-ratio", type=float, default=0.05, help="Warm-up as a fraction of the steps.")
    group.add_argument(
        "--max-grad-norm", type=_non_negative_float, default=1.0, help="Gradient clipping norm; 0 disables it."
    )
    group.add_argument("--gradient-checkpointing", action="store_true", help="Trade compute for activation memory.")
    group.add_argument("--seed", type=int, default=42, help="Seeds initialisation, data order and augmentation.")

    group = parser.add_argument_group("hardware (Accelerate does the distribution: see `accelerate config`)")
    group.add_argument(
        "--mixed-precision",
        choices=["no", "fp16", "bf16", "fp8"],
        help="Passed to Accelerator (default: what `accelerate config` / `accelerate launch` say).",
    )
    group.add_argument("--cpu", action="store_true", help="Run on CPU even when a GPU is available.")
    group.add_argument(
        "--num-workers", type=_non_negative_int, default=4, help="Data loader worker processes per device."
    )

    group = parser.add_argument_group("evaluation, checkpoints and logging")
    group.add_argument("--eval-steps", type=_non_negative_int, default=0, help="Evaluate every N steps (0: off).")
    group.add_argument(
        "--eval-epochs", type=_non_negative_int, default=1, help="Evaluate every N epochs (0: off). The end of "
        "training is always evaluated."
    )
    group.add_argument(
        "--checkpoint-steps", type=_non_negative_int, default=0, help="Checkpoint every N steps (0: off)."
    )
    group.add_argument(
        "--checkpoint-epochs", type=_non_negative_int, default=1, help="Checkpoint every N epochs (0: off)."
    )
    group.add_argument(
        "--checkpoints-total-limit",
        type=_positive_int,
        default=2,
        help="Keep only the newest N checkpoints (default: %(default)s).",
    )
    group.add_argument(
        "--resume-from-checkpoint",
        nargs="?",
        const="latest",
        metavar="latest|PATH",
        help="Continue a run: 'latest' (the newest complete checkpoint in OUTPUT_DIR/checkpoints, or a fresh start "
        "if there is none) or a checkpoint folder.",
    )
    group.add_argument("--logging-steps", type=_positive_int, default=10, help="Log training loss every N steps.")
    group.add_argument(
        "--report-to",
        default="none",
        help="Experiment trackers for Accelerate: none, tensorboard, wandb, ..., all (comma separated).",
    )
    group.add_argument(
        "--predict-examples",
        type=_non_negative_int,
        help="At the end, classify this many held-out images with `pipeline` and print them (default: 6 for the "
        "demo, else 0).",
    )

    group = parser.add_argument_group("publishing")
    group.add_argument("--push-to-hub", metavar="REPO_ID", help="Upload the final model folder to this Hub repo.")
    group.add_argument("--hub-private", action="store_true", help="Create the Hub repo as private.")


def finalize_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    if args.per_device_eval_batch_size is None:
        args.per_device_eval_batch_size = args.per_device_train_batch_size
    if args.predict_examples is None:
        args.predict_examples = 6 if args.dataset is None else 0
    if not 0.0 <= args.warmup_ratio < 1.0:
        parser.error(f"--warmup-ratio must be in [0, 1), got {args.warmup_ratio}")
    if args.drop_path_rate is not None and not 0.0 <= args.drop_path_rate < 1.0:
        parser.error(f"--drop-path-rate must be in [0, 1), got {args.drop_path_rate}")
    reporters = [name.strip() for name in args.report_to.split(",") if name.strip()]
    args.report_to = [] if reporters in ([], ["none"]) else reporters
    return args
