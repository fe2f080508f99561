"""`hf-localvit`: the user-facing commands in one place.

    hf-localvit convert --checkpoint dwnet_tiny_224.pth --output-dir dwnet-tiny [--push-to-hub ORG/NAME]
    hf-localvit publish dwnet-tiny --repo-id ORG/dwnet-tiny [--private] [--revision BRANCH] [--commit-message MSG]
    hf-localvit predict cat.jpg dog.png --model ORG/dwnet-tiny [--top-k 5]
    hf-localvit benchmark [bench/throughput.py arguments]
    hf-localvit card dwnet-tiny [--org ORG | --repo-id ORG/NAME] [--output PATH]
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

# `convert` and `benchmark` hand every argument to their own parser (argparse sub-commands would eat `--help`).
_FORWARDING_COMMANDS = ("convert", "benchmark")


def run_convert(args: argparse.Namespace) -> int:
    from .convert.dwnet_cli import main as convert_main

    return convert_main(args.forwarded_args, prog="hf-localvit convert")


def benchmark_script_candidates() -> list[Path]:
    """Where `bench/throughput.py` may be: the source checkout this package runs from, then the working directory."""
    return [Path(__file__).resolve().parents[1] / "bench" / "throughput.py", Path.cwd() / "bench" / "throughput.py"]


def run_benchmark(args: argparse.Namespace) -> int:
    script = next((path for path in benchmark_script_candidates() if path.is_file()), None)
    if script is None:
        searched = ", ".join(str(path) for path in benchmark_script_candidates())
        print(
            f"error: the benchmark script bench/throughput.py was not found (looked in {searched}). It ships with the "
            "hf-localvit source checkout: run this command from there.",
            file=sys.stderr,
        )
        return 2
    saved_argv = sys.argv
    sys.argv = [str(script), *args.forwarded_args]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved_argv
    return 0


def run_publish(args: argparse.Namespace) -> int:
    from .hub import HubTokenError, PublishError, publishable_files, upload_model_folder

    if args.dry_run:
        try:
            selection = publishable_files(args.folder)
        except PublishError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"Would upload to {args.repo_id}: {', '.join(selection.files)}")
        if selection.left_out:
            print(f"Left out: {', '.join(selection.left_out)}")
        if not selection.has_card:
            print("No README.md: a released model's card is written first if the config matches one (or --card).")
        return 0
    try:
        result = upload_model_folder(
            args.folder,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            card=args.card,
        )
    except HubTokenError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except PublishError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # HTTP, permission and network errors from huggingface_hub
        print(f"error: upload to {args.repo_id} failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if result.card_name:
        print(f"Wrote the model card of {result.card_name} to {Path(args.folder) / 'README.md'}")
    elif "README.md" not in result.files:
        print("warning: no README.md, so the repository has no model card (see `hf-localvit card`).", file=sys.stderr)
    print(f"Uploaded {len(result.files)} files: {', '.join(result.files)}")
    if result.left_out:
        print(f"Left out: {', '.join(result.left_out)}")
    if result.commit_url:
        print(f"Commit: {result.commit_url}")
    print(result.url)
    return 0


def run_card(args: argparse.Namespace) -> int:
    from .cards import (
        DEFAULT_ORG,
        RELEASED_MODELS,
        build_model_card,
        default_measured_results_path,
        load_measured_results,
    )

    if args.list or args.name is None:
        for name, model in RELEASED_MODELS.items():
            print(f"{name:<40} {model.title}")
        return 0 if args.list else 2
    if args.name not in RELEASED_MODELS:
        print(f"error: no released model {args.name!r}; `hf-localvit card --list` shows them.", file=sys.stderr)
        return 2
    try:
        measured = load_measured_results(args.measured or default_measured_results_path())
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    card = build_model_card(args.name, repo_id=args.repo_id, org=args.org or DEFAULT_ORG, measured=measured)
    if args.output is None:
        sys.stdout.write(str(card))
        return 0
    output = Path(args.output)
    if output.is_dir():
        output = output / "README.md"
    card.save(output)
    print(f"Wrote {output}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Top-k table for each image, with the model's own image processor."""
    from PIL import Image, UnidentifiedImageError
    from transformers import pipeline

    from . import auto_registration  # noqa: F401  (registers DWNet)

    classifier = pipeline("image-classification", model=args.model, device=args.device)
    status = 0
    for path in args.images:
        try:
            image = Image.open(path)
            image.load()
        except (OSError, UnidentifiedImageError) as error:
            print(f"{path}: cannot read image ({error})", file=sys.stderr)
            status = 1
            continue
        print(path)
        for rank, prediction in enumerate(classifier(image.convert("RGB"), top_k=args.top_k), start=1):
            print(f"  {rank:>2d}. {prediction['label']:<30s} {prediction['score']:.4f}")
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-localvit", description="DWNet models for Hugging Face transformers.")
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="Convert an original DWNet checkpoint (see `convert --help`).")
    convert.add_argument("forwarded_args", nargs=argparse.REMAINDER)
    convert.set_defaults(handler=run_convert)

    publish = commands.add_parser(
        "publish",
        help="Upload a model folder to the Hub (safetensors, configs, remote code, card; never pickles).",
        description="Upload a saved model folder to the Hugging Face Hub: *.safetensors, config.json, "
        "preprocessor_config.json, the code its auto_map needs for trust_remote_code=True, and README.md. "
        "Pickles, optimizer state, checkpoints and logs stay local. The token comes from HF_TOKEN or `hf auth login`.",
    )
    publish.add_argument("folder", help="Folder written by save_pretrained / a converter / finetune.py.")
    publish.add_argument("--repo-id", required=True, help="ORG/NAME of the model repo (created if missing).")
    publish.add_argument(
        "--private", action="store_true", help="Create the repo private (an existing repo keeps its visibility)."
    )
    publish.add_argument("--revision", help="Branch to upload to (created from main if missing).")
    publish.add_argument("--commit-message", default="Upload DWNet model")
    publish.add_argument(
        "--card", metavar="NAME", help="Write the card of this released model as README.md first (`card --list`)."
    )
    publish.add_argument("--dry-run", action="store_true", help="List what would be uploaded; upload nothing.")
    publish.set_defaults(handler=run_publish)

    predict = commands.add_parser("predict", help="Classify images with a model folder or Hub id.")
    predict.add_argument("images", nargs="+", help="Image files.")
    predict.add_argument("--model", required=True, help="Model folder or Hub id.")
    predict.add_argument("--top-k", type=int, default=5)
    predict.add_argument("--device", default="cpu")
    predict.set_defaults(handler=run_predict)

    benchmark = commands.add_parser(
        "benchmark", help="Throughput benchmark (bench/throughput.py; see `benchmark --help`)."
    )
    benchmark.add_argument("forwarded_args", nargs=argparse.REMAINDER)
    benchmark.set_defaults(handler=run_benchmark)

    card = commands.add_parser("card", help="Print or write the model card of a released model.")
    card.add_argument("name", nargs="?", help="Released model (see --list).")
    card.add_argument("--list", action="store_true", help="List the released models.")
    target = card.add_mutually_exclusive_group()
    target.add_argument("--org", help="Hub organisation for the repo id in the card (default hf-localvit).")
    target.add_argument("--repo-id", help="Full repo id for the card's snippets (default ORG/NAME).")
    card.add_argument(
        "--measured", help="Measured-results JSON (default: the checkout's model_cards/measured_results.json)."
    )
    card.add_argument("--output", help="File (or folder, for README.md) to write instead of printing.")
    card.set_defaults(handler=run_card)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] and argv[0] in _FORWARDING_COMMANDS:
        handler = run_convert if argv[0] == "convert" else run_benchmark
        return handler(argparse.Namespace(forwarded_args=argv[1:]))
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
