"""Command line of the DWNet converter: convert an original DWNet checkpoint (ImageNet classifier, or the backbone of a detection/segmentation one).

    python conversion/convert_dwnet_to_hf.py --checkpoint dwnet_tiny_224.pth --output-dir dwnet-tiny
    python conversion/convert_dwnet_to_hf.py --checkpoint upernet_dwnet_tiny.pth --output-dir dwnet-tiny-ade --backbone-only
"""

from __future__ import annotations

import argparse

from ..models.dwnet import DWNET_PRESETS
from .cli_common import converter_parser, run_converter
from .dwnet import convert_dwnet_checkpoint


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = converter_parser(prog, __doc__, "original DWNet", DWNET_PRESETS)
    parser.add_argument(
        "--backbone-only",
        action="store_true",
        help="Write a DWNetBackbone (downstream flavour for mmdet/mmseg checkpoints) instead of a classifier.",
    )
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)

    def convert():
        return convert_dwnet_checkpoint(
            args.checkpoint,
            args.output_dir,
            model_name=args.model_name,
            backbone_only=args.backbone_only,
            allow_unsafe_pickle=args.allow_unsafe_pickle,
            overwrite=args.overwrite,
        )

    return run_converter(args, convert, describe=lambda model: type(model).__name__)
