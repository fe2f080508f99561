"""`hf-localvit`: the user-facing commands in one place."""

from __future__ import annotations

import argparse
import sys


def run_convert(args: argparse.Namespace) -> int:
    from .convert.dwnet_cli import main as convert_main

    return convert_main(args.converter_args, prog="hf-localvit convert")


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

    convert = commands.add_parser("convert", help="Convert an original DWNet checkpoint (see --help of the script).")
    convert.add_argument("converter_args", nargs=argparse.REMAINDER)
    convert.set_defaults(handler=run_convert)

    predict = commands.add_parser("predict", help="Classify images with a model folder or Hub id.")
    predict.add_argument("images", nargs="+", help="Image files.")
    predict.add_argument("--model", required=True, help="Model folder or Hub id.")
    predict.add_argument("--top-k", type=int, default=5)
    predict.add_argument("--device", default="cpu")
    predict.set_defaults(handler=run_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["convert"]:
        # The converter owns its flags; hand them over untouched (argparse sub-commands would eat them).
        return run_convert(argparse.Namespace(converter_args=argv[1:]))
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
