"""Command line of the DWNet converter: convert an original DWNet checkpoint (ImageNet classifier, or the backbone of a detection/segmentation one).

    python conversion/convert_dwnet_to_hf.py --checkpoint dwnet_tiny_224.pth --output-dir dwnet-tiny
    python conversion/convert_dwnet_to_hf.py --checkpoint upernet_dwnet_tiny.pth --output-dir dwnet-tiny-ade --backbone-only
"""

from __future__ import annotations

import argparse
import sys

from ..models.dwnet import DWNET_PRESETS
from .dwnet import convert_dwnet_checkpoint
from .key_mapping import ConversionError


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="Path or http(s) URL of the original .pth checkpoint.")
    parser.add_argument("--output-dir", required=True, help="Folder to write (must be new or empty).")
    parser.add_argument("--model-name", choices=sorted(DWNET_PRESETS), help="Preset the checkpoint must match.")
    parser.add_argument(
        "--backbone-only",
        action="store_true",
        help="Write a DWNetBackbone (downstream flavour for mmdet/mmseg checkpoints) instead of a classifier.",
    )
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="Upload the converted folder to this Hub repo.")
    parser.add_argument("--overwrite", action="store_true", help="Replace a non-empty --output-dir.")
    parser.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="Allow full unpickling (runs code from the file): only for checkpoints you trust.",
    )
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        model = convert_dwnet_checkpoint(
            args.checkpoint,
            args.output_dir,
            model_name=args.model_name,
            backbone_only=args.backbone_only,
            allow_unsafe_pickle=args.allow_unsafe_pickle,
            overwrite=args.overwrite,
        )
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    parameters = sum(p.numel() for p in model.parameters())
    print(f"Wrote {type(model).__name__} ({parameters / 1e6:.2f}M parameters) to {args.output_dir}")
    if args.push_to_hub:
        from ..hub import publish_folder

        print(f"Published: {publish_folder(args.output_dir, args.push_to_hub)}")
    return 0
