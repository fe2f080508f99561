"""Convert an original mmsegmentation UperNet + DWNet checkpoint (e.g. the ADE20K models) to transformers'
`UperNetForSemanticSegmentation` with a DWNet backbone, plus the original test-time image processor.

    python conversion/convert_upernet_dwnet_to_hf.py --checkpoint upernet_dwnet_tiny_ade20k.pth --output-dir upernet-dwnet-tiny
    python conversion/convert_upernet_dwnet_to_hf.py --checkpoint https://.../upernet_dwnet_base.pth \
        --output-dir upernet-dwnet-base --model-name upernet-dwnet-base --push-to-hub org/upernet-dwnet-base
"""

import sys

from hf_localvit.convert.upernet import main

if __name__ == "__main__":
    sys.exit(main(prog="convert_upernet_dwnet_to_hf.py"))
