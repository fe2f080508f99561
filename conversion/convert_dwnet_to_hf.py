"""Convert an original DWNet checkpoint (ImageNet classifier, or the backbone of a detection/segmentation one).

    python conversion/convert_dwnet_to_hf.py --checkpoint dwnet_tiny_224.pth --output-dir dwnet-tiny
    python conversion/convert_dwnet_to_hf.py --checkpoint upernet_dwnet_tiny.pth --output-dir dwnet-tiny-ade --backbone-only

Also available as `hf-localvit convert ...`.
"""

import sys

from hf_localvit.convert.dwnet_cli import main

if __name__ == "__main__":
    sys.exit(main())
