"""The released models and the facts their cards state: the data half of the model cards.

Every number here is either the original work's (Han et al., ICLR 2022, and the released checkpoints of
Atten4Vis/DemystifyLocalViT) or measured on this port's models (parameters, multiply-accumulates). Where the sources
give no number, the field is None and the card says so: nothing is filled in by guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ORIGINAL_REPO_URL = "https://github.com/Atten4Vis/DemystifyLocalViT"
PAPER_TITLE = "On the Connection between Local Attention and Dynamic Depth-wise Convolution"
PAPER_VENUE = "ICLR 2022"
BIBTEX = """@inproceedings{han2022connection,
  title     = {On the Connection between Local Attention and Dynamic Depth-wise Convolution},
  author    = {Han, Qi and Fan, Zejia and Dai, Qi and Sun, Lei and Cheng, Ming-Ming and Liu, Jiaying and Wang, Jingdong},
  booktitle = {International Conference on Learning Representations},
  year      = {2022}
}"""

CLASSIFICATION = "classification"
SEGMENTATION = "segmentation"
DETECTION = "detection"
KINDS = (CLASSIFICATION, SEGMENTATION, DETECTION)


@dataclass(frozen=True)
class Metric:
    """How one metric appears in the model-index (`EvalResult`) and in the card's results table."""

    task_type: str
    task_name: str
    dataset_type: str
    dataset_name: str
    dataset_split: str
    metric_type: str
    metric_name: str


# Keys used in `ReleasedModel.original_results` and in the measured-results file.
METRICS: dict[str, Metric] = {
    "top1": Metric(
        "image-classification", "Image Classification", "imagenet-1k", "ImageNet-1K", "validation",
        "accuracy", "Top-1 accuracy",
    ),
    "top5": Metric(
        "image-classification", "Image Classification", "imagenet-1k", "ImageNet-1K", "validation",
        "top_5_accuracy", "Top-5 accuracy",
    ),
    "miou": Metric(
        "image-segmentation", "Semantic Segmentation", "scene_parse_150", "ADE20K", "validation",
        "mean_iou", "mIoU (single-scale)",
    ),
    "box_ap": Metric(
        "object-detection", "Object Detection", "coco", "COCO 2017", "validation", "box_ap", "box AP",
    ),
    "mask_ap": Metric(
        "image-segmentation", "Instance Segmentation", "coco", "COCO 2017", "validation", "mask_ap", "mask AP",
    ),
}

METRICS_BY_KIND: dict[str, tuple[str, ...]] = {
    CLASSIFICATION: ("top1", "top5"),
    SEGMENTATION: ("miou",),
    DETECTION: ("box_ap", "mask_ap"),
}


@dataclass(frozen=True)
class KindInfo:
    """What all released models of one kind share."""

    pipeline_tag: str
    datasets: tuple[str, ...]
    tags: tuple[str, ...]
    head: str


KIND_INFO: dict[str, KindInfo] = {
    CLASSIFICATION: KindInfo(
        pipeline_tag="image-classification",
        datasets=("imagenet-1k",),
        tags=("vision", "image-classification", "dwnet", "depth-wise-convolution", "hf-localvit"),
        head="global average pooling + linear classifier (1000 ImageNet-1K classes)",
    ),
    SEGMENTATION: KindInfo(
        pipeline_tag="image-segmentation",
        datasets=("scene_parse_150", "imagenet-1k"),
        tags=("vision", "image-segmentation", "semantic-segmentation", "upernet", "dwnet", "hf-localvit"),
        head="UperNet (UPerHead decoder, FCN auxiliary head for training), 150 ADE20K classes",
    ),
    DETECTION: KindInfo(
        pipeline_tag="object-detection",
        datasets=("coco", "imagenet-1k"),
        tags=(
            "vision", "object-detection", "instance-segmentation", "cascade-mask-rcnn", "dwnet", "hf-localvit",
        ),
        head="Cascade Mask R-CNN with FPN, 80 COCO classes (boxes and instance masks)",
    ),
}

MIXER_DESCRIPTION = {
    "static": "a static 7x7 depth-wise convolution (one kernel per channel, shared by all images and positions)",
    "dynamic": (
        "a dynamic 7x7 depth-wise convolution whose kernels are predicted for each image from its globally "
        "pooled features (homogeneous dynamic: the same kernel at every position)"
    ),
    "inhomogeneous": (
        "an inhomogeneous dynamic 7x7 depth-wise convolution whose kernels are predicted for each position and "
        "channel group (I-D)"
    ),
}


@dataclass(frozen=True)
class ReleasedModel:
    name: str  # Hub repo name and preset name
    kind: str  # CLASSIFICATION, SEGMENTATION or DETECTION
    title: str
    backbone: str  # the DWNet preset (hf_localvit.DWNET_PRESETS)
    params_m: float | None = None  # millions of parameters
    params_approx: bool = False  # the source gives "~N M"
    gmacs: float | None = None  # multiply-accumulates at 224x224, in billions
    original_checkpoint: str | None = None
    drop_path_rate: float | None = None  # of the original training run
    original_results: dict[str, float] = field(default_factory=dict)

    @property
    def size(self) -> str:
        return self.backbone.rsplit("-", 1)[-1]


RELEASED_MODELS: dict[str, ReleasedModel] = {
    model.name: model
    for model in (
        # ImageNet-1K classifiers. Params / GMACs measured on our models at 224x224; top-1 is the original work's.
        ReleasedModel(
            "dwnet-tiny", CLASSIFICATION, "DWNet-T", "dwnet-tiny", 24.2, False, 3.7, "dwnet_tiny_224.pth", 0.2,
            {"top1": 81.2},
        ),
        ReleasedModel(
            "dynamic-dwnet-tiny", CLASSIFICATION, "Dynamic DWNet-T", "dynamic-dwnet-tiny", 51.1, False, 3.8,
            "dynamic_dwnet_tiny_224.pth", 0.2, {"top1": 81.8},
        ),
        ReleasedModel(
            "i-dynamic-dwnet-tiny", CLASSIFICATION, "Inhomogeneous dynamic DWNet-T (I-D DWNet-T)",
            "i-dynamic-dwnet-tiny", 26.2, False, 4.4, None, 0.2,
        ),
        ReleasedModel(
            "dwnet-base", CLASSIFICATION, "DWNet-B", "dwnet-base", 74.3, False, 12.8, "dwnet_base_224.pth", 0.5,
            {"top1": 83.2},
        ),
        ReleasedModel(
            "dynamic-dwnet-base", CLASSIFICATION, "Dynamic DWNet-B", "dynamic-dwnet-base", 161.6, False, 12.9,
            "dynamic_dwnet_base_224.pth", 0.5, {"top1": 83.2},
        ),
        ReleasedModel(
            "i-dynamic-dwnet-base", CLASSIFICATION, "Inhomogeneous dynamic DWNet-B (I-D DWNet-B)",
            "i-dynamic-dwnet-base", 80.3, False, 14.3, None, 0.5,
        ),
        # ADE20K UperNet (160k iterations, 512x512 crops, mmsegmentation 0.x).
        ReleasedModel(
            "upernet-dwnet-tiny", SEGMENTATION, "UperNet DWNet-T", "dwnet-tiny", 56, True, None, None, None,
            {"miou": 45.5},
        ),
        ReleasedModel(
            "upernet-dynamic-dwnet-tiny", SEGMENTATION, "UperNet Dynamic DWNet-T", "dynamic-dwnet-tiny", 83, True,
            None, None, None, {"miou": 45.7},
        ),
        ReleasedModel(
            "upernet-dwnet-base", SEGMENTATION, "UperNet DWNet-B", "dwnet-base", 108, True, None, None, None,
            {"miou": 48.3},
        ),
        ReleasedModel(
            "upernet-dynamic-dwnet-base", SEGMENTATION, "UperNet Dynamic DWNet-B", "dynamic-dwnet-base", 195, True,
            None, None, None, {"miou": 48.0},
        ),
        # COCO Cascade Mask R-CNN (FPN, 3x schedule, multi-scale training, mmdetection 2.11).
        ReleasedModel(
            "cascade-mask-rcnn-dwnet-tiny", DETECTION, "Cascade Mask R-CNN DWNet-T", "dwnet-tiny",
            original_results={"box_ap": 49.9, "mask_ap": 43.4},
        ),
        ReleasedModel(
            "cascade-mask-rcnn-dynamic-dwnet-tiny", DETECTION, "Cascade Mask R-CNN Dynamic DWNet-T",
            "dynamic-dwnet-tiny", original_results={"box_ap": 50.5, "mask_ap": 43.7},
        ),
        ReleasedModel(
            "cascade-mask-rcnn-dwnet-base", DETECTION, "Cascade Mask R-CNN DWNet-B", "dwnet-base",
            original_results={"box_ap": 51.0, "mask_ap": 44.1},
        ),
        ReleasedModel(
            "cascade-mask-rcnn-dynamic-dwnet-base", DETECTION, "Cascade Mask R-CNN Dynamic DWNet-B",
            "dynamic-dwnet-base", original_results={"box_ap": 51.2, "mask_ap": 44.4},
        ),
    )
}

