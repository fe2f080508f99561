#!/usr/bin/env python
"""Fine-tune DWNet models with Hugging Face Accelerate.

    accelerate launch finetune.py --model NAME_OR_PATH --dataset NAME_OR_PATH [options] --output-dir DIR

Without --dataset it fine-tunes a small DWNet on scikit-learn's handwritten digits, offline. See
`python finetune.py --help` for the options; the work is done in `hf_localvit.training`.
"""

import sys

import hf_localvit  # noqa: F401  (registers DWNet with the transformers Auto classes)
from hf_localvit.training import main

if __name__ == "__main__":
    sys.exit(main())
