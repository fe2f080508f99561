"""Generate the model card of every released model into model_cards/<name>/README.md.

    python model_cards/generate.py                       # default org hf-localvit, measured_results.json if present
    python model_cards/generate.py --org my-org --output-dir /tmp/cards
    python model_cards/generate.py --check               # exit 1 if the committed cards are out of date

The template is hf_localvit/cards/template.py, the data hf_localvit/cards/models.py (the original work's results,
our parameter / MAC counts) and model_cards/measured_results.json (results we measured ourselves; see the docstring
of hf_localvit.cards for its format). Same inputs, same bytes: the output is deterministic.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from hf_localvit.cards import DEFAULT_ORG, MEASURED_RESULTS_FILE, load_measured_results, write_model_cards  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--org", default=DEFAULT_ORG, help=f"Hub organisation of the repo ids (default {DEFAULT_ORG}).")
    parser.add_argument("--output-dir", type=Path, default=HERE, help="Where to write <name>/README.md.")
    parser.add_argument(
        "--measured",
        type=Path,
        default=HERE / MEASURED_RESULTS_FILE,
        help="Measured-results JSON (default model_cards/measured_results.json; ignored if missing).",
    )
    parser.add_argument("--check", action="store_true", help="Write nothing; exit 1 if --output-dir is out of date.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    measured = load_measured_results(args.measured if args.measured.is_file() else None)
    if not args.check:
        for path in write_model_cards(args.output_dir, org=args.org, measured=measured):
            print(path)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stale = [
            path.relative_to(tmp)
            for path in write_model_cards(tmp, org=args.org, measured=measured)
            if not (args.output_dir / path.relative_to(tmp)).is_file()
            or not filecmp.cmp(path, args.output_dir / path.relative_to(tmp), shallow=False)
        ]
    for path in stale:
        print(f"out of date: {args.output_dir / path}", file=sys.stderr)
    if stale:
        print("Run `python model_cards/generate.py` to regenerate.", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
