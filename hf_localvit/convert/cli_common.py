"""What every converter's command line shares: the common flags and the convert -> report -> publish flow."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable

from torch import nn

from .key_mapping import ConversionError


def converter_parser(
    prog: str | None, description: str | None, checkpoint_kind: str, presets: Iterable[str]
) -> argparse.ArgumentParser:
    """A parser with `--checkpoint`, `--output-dir`, `--model-name`, `--push-to-hub`, `--overwrite` and
    `--allow-unsafe-pickle`; converters add their own flags to it."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help=f"Path or http(s) URL of the {checkpoint_kind} .pth checkpoint.")
    parser.add_argument("--output-dir", required=True, help="Folder to write (must be new or empty).")
    parser.add_argument("--model-name", choices=sorted(presets), help="Preset the checkpoint must match.")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="Upload the converted folder to this Hub repo.")
    parser.add_argument("--overwrite", action="store_true", help="Replace a non-empty --output-dir.")
    parser.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="Allow full unpickling (runs code from the file): only for checkpoints you trust.",
    )
    return parser


def run_converter(args: argparse.Namespace, convert: Callable[[], nn.Module], describe: Callable[[nn.Module], str]) -> int:
    """Run `convert`, report what was written (or the error, exit code 2), then publish if asked."""
    try:
        model = convert()
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    parameters = sum(p.numel() for p in model.parameters())
    print(f"Wrote {describe(model)} ({parameters / 1e6:.2f}M parameters) to {args.output_dir}")
    if args.push_to_hub:
        from ..hub import HubTokenError, PublishError, publish_folder

        try:
            print(f"Published: {publish_folder(args.output_dir, args.push_to_hub)}")
        except (PublishError, HubTokenError) as error:
            print(f"error: the conversion succeeded, but publishing failed: {error}", file=sys.stderr)
            return 2
    return 0
