"""Convert an mmdetection Cascade Mask R-CNN + DWNet checkpoint (the paper's COCO models) to transformers.

    python conversion/convert_cascade_mask_rcnn_dwnet_to_hf.py --checkpoint PATH_OR_URL --output-dir DIR \
        [--push-to-hub REPO_ID] [--model-name dwnet-tiny] [--overwrite]

The folder then loads with `AutoModelForObjectDetection.from_pretrained(DIR)` (after `import hf_localvit`) and
works with `pipeline("object-detection", model=DIR)`.
"""

import sys

from hf_localvit.convert.cascade_mask_rcnn import main

if __name__ == "__main__":
    sys.exit(main())
