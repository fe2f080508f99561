"""The original ADE20K test pipeline (mmsegmentation 0.x) as a transformers image processor.

The original test pipeline is: `Resize(img_scale=(2048, 512), keep_ratio=True)` (`mmcv.imrescale`, OpenCV bilinear
on the uint8 image), then `Normalize(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), to_rgb=True)`,
no padding, whole-image inference, and the logits resized bilinearly back to the original image size.

The normalisation is exactly `rescale 1/255` followed by ImageNet mean/std (123.675 / 255 = 0.485, 58.395 / 255 =
0.229, ...). The resize is where the existing processors fall short. `mmcv.imrescale` scales by
`min(2048 / long_side, 512 / short_side)` and rounds each side half up (`int(side * scale + 0.5)`), and OpenCV's
bilinear does not antialias when shrinking. transformers' `SegformerImageProcessor` (the class transformers pairs
with UperNet) can apply the same scale with `size={"shortest_edge": 512, "longest_edge": 2048}`, but it floors
the long side (so about half of the images whose short side is not 512 come out one pixel narrower than in the
original) and it antialiases when shrinking. `DWNetSegmentationImageProcessor` is `SegformerImageProcessor` with
only that size rule and `antialias=False` changed, so the model sees the original's input size; everything else
(rescale, normalisation, `do_reduce_labels`, `post_process_semantic_segmentation`) is Segformer's. Pixel values
can still differ from OpenCV's fixed-point bilinear by rounding (at most one grey level before normalisation).
"""

from __future__ import annotations

from typing import Any

from transformers import SegformerImageProcessor
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling, SizeDict

ORIGINAL_TEST_SCALE = (2048, 512)  # mmseg `img_scale`: (long side limit, short side limit)


def keep_ratio_size(height: int, width: int, long_edge: int, short_edge: int) -> tuple[int, int]:
    """`mmcv.rescale_size` for a `(long, short)` scale: the largest `(height, width)` with the same aspect ratio
    whose long side fits `long_edge` and short side fits `short_edge`, each side rounded half up."""
    scale = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


class DWNetSegmentationImageProcessor(SegformerImageProcessor):
    """`SegformerImageProcessor` whose `{"shortest_edge", "longest_edge"}` resize is mmcv's keep-ratio rescale
    (round half up, no antialiasing), as the original DWNet UperNet models were evaluated. With the default size
    `{"shortest_edge": 512, "longest_edge": 2048}` a 300x400 image becomes 512x683, a 512x4000 one 262x2048.

    Any other `size` (e.g. `{"height": 512, "width": 512}`) behaves exactly as in `SegformerImageProcessor`.
    """

    size = {"shortest_edge": ORIGINAL_TEST_SCALE[1], "longest_edge": ORIGINAL_TEST_SCALE[0]}
    default_to_square = False
    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD

    def resize(self, image, size: SizeDict, resample=None, antialias: bool = True, **kwargs: Any):
        if size.shortest_edge and size.longest_edge:
            height, width = image.shape[-2:]
            new_height, new_width = keep_ratio_size(height, width, size.longest_edge, size.shortest_edge)
            size = SizeDict(height=new_height, width=new_width)
            antialias = False  # OpenCV's bilinear, as the original used, does not low-pass filter when shrinking
        return super().resize(image, size, resample=resample, antialias=antialias, **kwargs)


def upernet_dwnet_image_processor(do_reduce_labels: bool = True) -> DWNetSegmentationImageProcessor:
    """The original ADE20K test preprocessing. `do_reduce_labels=True` (for annotations only) maps ADE20K's
    "other" (0) to the ignore index 255 and class `i + 1` to `i`, like the original `reduce_zero_label=True`;
    use False for datasets whose annotations already start at 0."""
    return DWNetSegmentationImageProcessor(
        size={"shortest_edge": ORIGINAL_TEST_SCALE[1], "longest_edge": ORIGINAL_TEST_SCALE[0]},
        resample=PILImageResampling.BILINEAR,
        do_resize=True,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGENET_DEFAULT_MEAN),
        image_std=list(IMAGENET_DEFAULT_STD),
        do_reduce_labels=do_reduce_labels,
    )


__all__ = ["DWNetSegmentationImageProcessor", "keep_ratio_size", "upernet_dwnet_image_processor"]
