"""Cascade Mask R-CNN configuration: any `AutoBackbone`, FPN, RPN, a cascade of box heads and FCN mask heads.

The defaults are the architecture of the paper's detection config (`cascade_mask_rcnn_dwnet_fpn` with the
`4conv1f` heads, mmdetection 2.11) with a DWNet-T backbone in the downstream flavour, and its train/test settings.
"""

from __future__ import annotations

from typing import Any

from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec
from transformers.models.auto.configuration_auto import AutoConfig

from ..dwnet.configuration_dwnet import DOWNSTREAM_FLAVOUR, DWNET_PRESETS, dwnet_preset_config

# The 80 COCO categories in mmdetection's order (label i is the i-th contiguous class, as in the checkpoints).
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip
COCO_ID2LABEL = dict(enumerate(COCO_CLASSES))

# Default backbone: DWNet-T as the detection checkpoints use it (per-block padding, BatchNorm on each output stage).
DEFAULT_BACKBONE_KWARGS = {**DWNET_PRESETS["dwnet-tiny"], **DOWNSTREAM_FLAVOUR}
DEFAULT_CASCADE_BOX_STDS = ((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067))
BOX_HEAD_NORMS = ("batch_norm", "none")
# The paper's COCO detectors by name (as the released checkpoints), each with the DWNet preset of its backbone.
CASCADE_MASK_RCNN_PRESETS: dict[str, str] = {
    "cascade-mask-rcnn-dwnet-tiny": "dwnet-tiny",
    "cascade-mask-rcnn-dynamic-dwnet-tiny": "dynamic-dwnet-tiny",
    "cascade-mask-rcnn-dwnet-base": "dwnet-base",
    "cascade-mask-rcnn-dynamic-dwnet-base": "dynamic-dwnet-base",
}


class CascadeMaskRCNNConfig(PreTrainedConfig):
    r"""
    Configuration of [`CascadeMaskRCNNForInstanceSegmentation`] (Cai & Vasconcelos, "Cascade R-CNN", with mask
    heads as in HTC/mmdetection), following mmdetection 2.x semantics.

    Args:
        backbone_config: Config of the backbone (any model registered with `AutoBackbone`); defaults to DWNet-T in
            the downstream flavour with stages 1-4 as outputs.
        fpn_out_channels: Channels of every FPN level, of the RPN and of the RoI features.
        num_fpn_levels: FPN outputs: one per backbone stage plus extra levels made by stride-2 max-pooling.
        rpn_feat_channels: Channels of the RPN's 3x3 conv.
        anchor_scales / anchor_ratios / anchor_strides: Anchors per FPN level: `stride * scale` sized squares
            reshaped to each height/width `ratio`, one stride per FPN level.
        rpn_box_stds: Standard deviations of the RPN's delta encoding.
        roi_feature_strides: Strides of the FPN levels RoIs are pooled from (the first `len(...)` levels).
        roi_finest_scale: RoIs with `sqrt(area) < 2 * roi_finest_scale` use the finest level (FPN paper's rule).
        box_roi_size / mask_roi_size: RoIAlign output side for the box heads (7) and the mask heads (14).
        roi_sampling_ratio: RoIAlign sampling points per bin (0 = adaptive).
        cascade_iou_thresholds: One cascade stage per value: the IoU at which proposals count as positive.
        cascade_box_stds: Per stage, the standard deviations of the delta encoding of the box regression.
        cascade_stage_loss_weights: Per stage, the weight of its losses.
        box_head_num_convs / box_head_conv_channels / box_head_num_fcs / box_head_fc_channels: The ConvFC box head
            (`4conv1f`: four 3x3 convs then one fc).
        box_head_norm: `"batch_norm"` after each box-head conv (the released configs) or `"none"`.
        box_reg_class_agnostic: One box regression for all classes instead of one per class.
        mask_head_num_convs / mask_head_channels: The FCN mask head's 3x3 convs; a 2x deconv follows.
        mask_class_agnostic: One mask per RoI instead of one per class.
        rpn_pre_nms_top_k_test / rpn_post_nms_top_k_test / rpn_pre_nms_top_k_train / rpn_post_nms_top_k_train:
            Proposals kept per FPN level before NMS, and per image after it.
        rpn_nms_threshold: IoU of the RPN's NMS (run per level).
        rpn_min_box_size: Proposals narrower or lower than this are dropped (0 keeps all).
        box_score_threshold / box_nms_threshold / max_detections: Final detections: class score above the threshold,
            per-class NMS, best `max_detections` per image.
        mask_threshold: Probability above which a pasted mask pixel is foreground.
        rpn_positive_iou / rpn_negative_iou / rpn_min_positive_iou: RPN anchor assignment (max-IoU, with
            low-quality matches).
        rpn_batch_size_per_image / rpn_positive_fraction: RPN anchors sampled per image, and the positive share.
        rpn_allowed_border: Anchors crossing the image border by more than this many pixels are ignored in training
            (negative: keep all).
        roi_batch_size_per_image / roi_positive_fraction: RoIs sampled per image and cascade stage.
        rpn_smooth_l1_beta: Beta of the RPN's smooth-L1 box loss.
        box_loss_weight: Weight of the cascade heads' GIoU loss on decoded boxes.
        mask_target_size: Side of the mask targets and predictions (twice `mask_roi_size`).
        batch_norm_eps: Epsilon of the box heads' BatchNorms.
        initializer_range: Std of the normal initialisation of layers without a specific scheme.
    """

    model_type = "cascade_mask_rcnn"
    sub_configs_defaults = {
        "backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="dwnet", init_kwargs=DEFAULT_BACKBONE_KWARGS)
    }

    backbone_config: dict | PreTrainedConfig | None = None
    fpn_out_channels: int = 256
    num_fpn_levels: int = 5
    rpn_feat_channels: int = 256
    anchor_scales: list[float] | tuple[float, ...] = (8.0,)
    anchor_ratios: list[float] | tuple[float, ...] = (0.5, 1.0, 2.0)
    anchor_strides: list[int] | tuple[int, ...] = (4, 8, 16, 32, 64)
    rpn_box_stds: list[float] | tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    roi_feature_strides: list[int] | tuple[int, ...] = (4, 8, 16, 32)
    roi_finest_scale: int = 56
    box_roi_size: int = 7
    mask_roi_size: int = 14
    roi_sampling_ratio: int = 0
    cascade_iou_thresholds: list[float] | tuple[float, ...] = (0.5, 0.6, 0.7)
    cascade_box_stds: list | tuple = DEFAULT_CASCADE_BOX_STDS
    cascade_stage_loss_weights: list[float] | tuple[float, ...] = (1.0, 0.5, 0.25)
    box_head_num_convs: int = 4
    box_head_conv_channels: int = 256
    box_head_num_fcs: int = 1
    box_head_fc_channels: int = 1024
    box_head_norm: str = "batch_norm"
    box_reg_class_agnostic: bool = False
    mask_head_num_convs: int = 4
    mask_head_channels: int = 256
    mask_class_agnostic: bool = False
    # test-time settings (mmdetection `test_cfg`)
    rpn_pre_nms_top_k_test: int = 1000
    rpn_post_nms_top_k_test: int = 1000
    rpn_nms_threshold: float = 0.7
    rpn_min_box_size: float = 0.0
    box_score_threshold: float = 0.05
    box_nms_threshold: float = 0.5
    max_detections: int = 100
    mask_threshold: float = 0.5
    # training settings (mmdetection `train_cfg`)
    rpn_pre_nms_top_k_train: int = 2000
    rpn_post_nms_top_k_train: int = 2000
    rpn_positive_iou: float = 0.7
    rpn_negative_iou: float = 0.3
    rpn_min_positive_iou: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_allowed_border: float = 0.0
    roi_batch_size_per_image: int = 512
    roi_positive_fraction: float = 0.25
    rpn_smooth_l1_beta: float = 1.0 / 9.0
    box_loss_weight: float = 10.0
    mask_target_size: int = 28
    batch_norm_eps: float = 1e-5
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label = dict(COCO_ID2LABEL)
        if self.label2id is None and self.id2label is not None:
            self.label2id = {label: index for index, label in self.id2label.items()}
        for name in (
            "anchor_scales",
            "anchor_ratios",
            "anchor_strides",
            "rpn_box_stds",
            "roi_feature_strides",
            "cascade_iou_thresholds",
            "cascade_stage_loss_weights",
        ):
            setattr(self, name, list(getattr(self, name)))
        self.cascade_box_stds = [list(stds) for stds in self.cascade_box_stds]
        super().__post_init__(**kwargs)
        self._validate()

    @property
    def num_cascade_stages(self) -> int:
        return len(self.cascade_iou_thresholds)

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.anchor_scales) * len(self.anchor_ratios)

    def _validate(self) -> None:
        def fail(field: str, problem: str, fix: str) -> None:
            raise ValueError(f"CascadeMaskRCNNConfig.{field}: {problem}. {fix}")

        stages = self.num_cascade_stages
        if stages < 1:
            fail("cascade_iou_thresholds", "no stages", "Give one IoU threshold per cascade stage, e.g. [0.5, 0.6, 0.7].")
        if len(self.cascade_box_stds) != stages or any(len(stds) != 4 for stds in self.cascade_box_stds):
            fail(
                "cascade_box_stds",
                f"got {self.cascade_box_stds!r} for {stages} stages",
                "Give four standard deviations (dx, dy, dw, dh) per cascade stage.",
            )
        if len(self.cascade_stage_loss_weights) != stages:
            fail(
                "cascade_stage_loss_weights",
                f"{len(self.cascade_stage_loss_weights)} weights for {stages} stages",
                "Give one weight per stage.",
            )
        if len(self.anchor_strides) != self.num_fpn_levels:
            fail(
                "anchor_strides",
                f"{len(self.anchor_strides)} strides for {self.num_fpn_levels} FPN levels",
                "Give one anchor stride per FPN level.",
            )
        if not 1 <= len(self.roi_feature_strides) <= self.num_fpn_levels:
            fail(
                "roi_feature_strides",
                f"got {self.roi_feature_strides!r}",
                "Give the strides of the first FPN levels used for RoI pooling.",
            )
        if len(self.rpn_box_stds) != 4:
            fail("rpn_box_stds", f"got {self.rpn_box_stds!r}", "Give four standard deviations.")
        if self.box_head_norm not in BOX_HEAD_NORMS:
            fail("box_head_norm", f"unknown norm {self.box_head_norm!r}", f"Choose one of {', '.join(BOX_HEAD_NORMS)}.")
        if self.box_head_num_convs + self.box_head_num_fcs < 1:
            fail(
                "box_head_num_convs",
                "a box head with neither convs nor fcs",
                "Use at least one conv or fc (4 convs + 1 fc in the paper).",
            )
        if self.num_labels is None or self.num_labels < 1:
            fail("num_labels", f"got {self.num_labels!r}", "Give at least one object class (id2label or num_labels).")
        if self.mask_target_size != 2 * self.mask_roi_size:
            fail(
                "mask_target_size",
                f"{self.mask_target_size} with mask_roi_size {self.mask_roi_size}",
                "The mask head upsamples by 2: use twice mask_roi_size.",
            )
        fractions = ("rpn_nms_threshold", "box_nms_threshold", "mask_threshold", "rpn_positive_fraction", "roi_positive_fraction")
        for field in fractions:
            value = getattr(self, field)
            if not 0.0 <= value <= 1.0:
                fail(field, f"got {value!r}", "Use a value in [0, 1].")


def cascade_mask_rcnn_preset_config(
    name: str, backbone_overrides: dict[str, Any] | None = None, **overrides: Any
) -> CascadeMaskRCNNConfig:
    """The config of a named detector preset (`cascade-mask-rcnn-dwnet-tiny`, ...): the paper's architecture with
    its DWNet backbone in the downstream flavour; `backbone_overrides` go to the backbone config (e.g.
    `drop_path_rate`), the other `overrides` to the detector's (e.g. `id2label`)."""
    if name not in CASCADE_MASK_RCNN_PRESETS:
        raise ValueError(
            f"Unknown Cascade Mask R-CNN preset {name!r}. Available presets: {', '.join(CASCADE_MASK_RCNN_PRESETS)}."
        )
    backbone = dwnet_preset_config(CASCADE_MASK_RCNN_PRESETS[name], downstream=True, **(backbone_overrides or {}))
    return CascadeMaskRCNNConfig(backbone_config=backbone, **overrides)


__all__ = [
    "CASCADE_MASK_RCNN_PRESETS",
    "COCO_CLASSES",
    "COCO_ID2LABEL",
    "CascadeMaskRCNNConfig",
    "cascade_mask_rcnn_preset_config",
]
