"""PyTorch Cascade Mask R-CNN (FPN, RPN, cascade ConvFC box heads, FCN mask heads) with mmdetection 2.x semantics.

Pipeline at test time (mmdetection's `CascadeRCNN.simple_test`):
1. backbone (any `AutoBackbone`) -> FPN (1x1 laterals, nearest top-down, 3x3 outputs, extra levels by stride-2
   max-pooling);
2. RPN: per level, the `rpn_pre_nms_top_k` best anchors by sigmoid objectness, decoded and clipped to the image's
   valid region, NMS per level (mmcv's batched NMS with level ids), best `rpn_post_nms_top_k` per image;
3. cascade: each stage pools RoIs (RoIAlign 7x7 from the level chosen by scale), classifies and regresses them;
   between stages each RoI is re-decoded with the regression of its argmax non-background class;
4. class logits averaged over the stages, softmax, boxes decoded by the last stage, clipped, score threshold,
   per-class NMS (in the original image's frame when `original_sizes` is given, as mmdetection does after
   `rescale`), best `max_detections`;
5. masks: every stage's mask head on the final boxes (RoIAlign 14x14), sigmoids averaged; the image processor
   pastes them into the original image (`post_process_instance_segmentation`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock
from transformers import initialization as init
from transformers.backbone_utils import load_backbone
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_cascade_mask_rcnn import CascadeMaskRCNNConfig
from .ops_cascade_mask_rcnn import (
    AnchorGenerator,
    DeltaXYWHBoxCoder,
    boxes_to_rois,
    mmcv_batched_nms,
    multi_level_roi_align,
)


@dataclass
class CascadeMaskRCNNOutput(ModelOutput):
    r"""
    loss: Total training loss (when `labels` are given).
    loss_dict: The individual losses: `loss_rpn_cls`, `loss_rpn_bbox`, and per cascade stage `s{i}.loss_cls`,
        `s{i}.loss_bbox`, `s{i}.loss_mask`, each already weighted.
    pred_boxes: Per image, (k, 4) detected boxes (x1, y1, x2, y2) in pixels of the input (`pixel_values`) frame,
        inside the image's valid region. Sorted by score. Only in eval mode.
    scores: Per image, (k,) detection scores.
    labels: Per image, (k,) class indices in `[0, num_labels)`.
    pred_masks: Per image, (k, 28, 28) mask probabilities of each detection's class inside its box (the mean of
        the stages' sigmoids); `post_process_instance_segmentation` pastes them into the image.
    proposals: Per image, (n, 5) RPN proposals (x1, y1, x2, y2, objectness) in the input frame.
    image_sizes: (batch, 2) valid (height, width) of each image inside the padded batch (from `pixel_mask`).
    original_sizes: (batch, 2) the sizes given to `forward` (or the valid sizes): the frame of the final NMS.
    fpn_feature_maps: The FPN levels (strides 4 ... 64).
    backbone_feature_maps: The backbone's feature maps (with `output_hidden_states=True`).
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict[str, torch.Tensor] | None = None
    pred_boxes: list[torch.Tensor] | None = None
    scores: list[torch.Tensor] | None = None
    labels: list[torch.Tensor] | None = None
    pred_masks: list[torch.Tensor] | None = None
    proposals: list[torch.Tensor] | None = None
    image_sizes: torch.LongTensor | None = None
    original_sizes: torch.LongTensor | None = None
    fpn_feature_maps: tuple[torch.FloatTensor, ...] | None = None
    backbone_feature_maps: tuple[torch.FloatTensor, ...] | None = None


class ConvNormActivation(nn.Module):
    """3x3 (or kxk) conv, optional BatchNorm, ReLU: mmcv's `ConvModule` order (the conv has no bias under a norm)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, norm: str = "none", eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=norm == "none")
        self.norm = nn.BatchNorm2d(out_channels, eps=eps) if norm == "batch_norm" else None
        self.activation = nn.ReLU(inplace=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = self.conv(features)
        if self.norm is not None:
            features = self.norm(features)
        return self.activation(features)


class MaxPoolExtraLevels(ExtraFPNBlock):
    """mmdetection's FPN extra levels without extra convs: repeatedly `max_pool2d(kernel 1, stride 2)` of the last
    output (torchvision's `LastLevelMaxPool` adds exactly one such level)."""

    def __init__(self, num_levels: int) -> None:
        super().__init__()
        self.num_levels = num_levels

    def forward(self, results, inputs, names):
        for index in range(self.num_levels):
            results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0))
            names.append(f"pool{index}")
        return results, names


class CascadeMaskRCNNFPN(nn.Module):
    """`torchvision.ops.FeaturePyramidNetwork` (same computation as mmdetection's `FPN` with `add_extra_convs=False`:
    lateral 1x1 convs, top-down nearest upsampling to the lower level's size, 3x3 output convs)."""

    def __init__(self, in_channels: list[int], out_channels: int, num_levels: int) -> None:
        super().__init__()
        if num_levels < len(in_channels):
            raise ValueError(f"num_fpn_levels={num_levels} is less than the {len(in_channels)} backbone feature maps.")
        extra = num_levels - len(in_channels)
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=MaxPoolExtraLevels(extra) if extra else None)

    def forward(self, feature_maps: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        inputs = OrderedDict((str(index), feature) for index, feature in enumerate(feature_maps))
        return list(self.fpn(inputs).values())


class CascadeMaskRCNNRPNHead(nn.Module):
    """Shared 3x3 conv + ReLU, then per anchor a sigmoid objectness logit and four box deltas (mmdet's `RPNHead`)."""

    def __init__(self, config: CascadeMaskRCNNConfig) -> None:
        super().__init__()
        anchors = config.num_anchors_per_location
        self.conv = nn.Conv2d(config.fpn_out_channels, config.rpn_feat_channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(config.rpn_feat_channels, anchors, 1)
        self.box_deltas = nn.Conv2d(config.rpn_feat_channels, anchors * 4, 1)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, deltas = [], []
        for feature in features:
            hidden = F.relu(self.conv(feature))
            logits.append(self.objectness_logits(hidden))
            deltas.append(self.box_deltas(hidden))
        return logits, deltas


class CascadeMaskRCNNBoxHead(nn.Module):
    """mmdetection's `ConvFCBBoxHead` with shared convs and fcs only (`4conv1f`): convs (+BN) + ReLU, flatten,
    fc + ReLU, then a classifier over `num_labels + 1` classes (background last) and a (class-specific) box
    regression decoded with this stage's stds."""

    def __init__(self, config: CascadeMaskRCNNConfig, stage: int) -> None:
        super().__init__()
        self.num_classes = config.num_labels
        self.class_agnostic = config.box_reg_class_agnostic
        self.coder = DeltaXYWHBoxCoder(config.cascade_box_stds[stage])
        channels = config.fpn_out_channels
        self.convs = nn.ModuleList()
        for _ in range(config.box_head_num_convs):
            self.convs.append(
                ConvNormActivation(channels, config.box_head_conv_channels, 3, config.box_head_norm, config.batch_norm_eps)
            )
            channels = config.box_head_conv_channels
        features = channels * config.box_roi_size**2
        self.fcs = nn.ModuleList()
        for _ in range(config.box_head_num_fcs):
            self.fcs.append(nn.Linear(features, config.box_head_fc_channels))
            features = config.box_head_fc_channels
        self.classifier = nn.Linear(features, self.num_classes + 1)
        self.regressor = nn.Linear(features, 4 if self.class_agnostic else 4 * self.num_classes)

    def forward(self, roi_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = roi_features
        for conv in self.convs:
            hidden = conv(hidden)
        hidden = hidden.flatten(1)
        for fc in self.fcs:
            hidden = F.relu(fc(hidden))
        return self.classifier(hidden), self.regressor(hidden)

    def regress_by_class(
        self, boxes: torch.Tensor, labels: torch.Tensor, deltas: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """Decode each box with the deltas of `labels` (mmdet's `regress_by_class`), clipped to `image_size`."""
        if not self.class_agnostic:
            index = (labels * 4)[:, None] + torch.arange(4, device=labels.device)
            deltas = torch.gather(deltas, 1, index)
        return self.coder.decode(boxes, deltas, max_shape=image_size)


class CascadeMaskRCNNMaskHead(nn.Module):
    """mmdetection's `FCNMaskHead`: 3x3 convs + ReLU, 2x2 stride-2 deconv + ReLU, 1x1 conv to one logit map per
    class (or one for all classes)."""

    def __init__(self, config: CascadeMaskRCNNConfig) -> None:
        super().__init__()
        channels = config.fpn_out_channels
        self.convs = nn.ModuleList()
        for _ in range(config.mask_head_num_convs):
            self.convs.append(ConvNormActivation(channels, config.mask_head_channels, 3, "none"))
            channels = config.mask_head_channels
        self.upsample = nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)
        self.mask_logits = nn.Conv2d(channels, 1 if config.mask_class_agnostic else config.num_labels, 1)

    def forward(self, roi_features: torch.Tensor) -> torch.Tensor:
        hidden = roi_features
        for conv in self.convs:
            hidden = conv(hidden)
        return self.mask_logits(F.relu(self.upsample(hidden)))


def select_class_maps(mask_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(n, C, m, m) -> (n, m, m): each RoI's map for its class (the only map of a class-agnostic head)."""
    if mask_logits.shape[1] == 1:
        return mask_logits[:, 0]
    return mask_logits[torch.arange(mask_logits.shape[0], device=mask_logits.device), labels]


class CascadeMaskRCNNRoIHeads(nn.Module):
    """The cascade: one box head and one mask head per stage, RoIs pooled from the first FPN levels."""

    def __init__(self, config: CascadeMaskRCNNConfig) -> None:
        super().__init__()
        self.config = config
        self.box_heads = nn.ModuleList(CascadeMaskRCNNBoxHead(config, stage) for stage in range(config.num_cascade_stages))
        self.mask_heads = nn.ModuleList(CascadeMaskRCNNMaskHead(config) for _ in range(config.num_cascade_stages))

    def pool(self, features: list[torch.Tensor], rois: torch.Tensor, output_size: int) -> torch.Tensor:
        strides = self.config.roi_feature_strides
        return multi_level_roi_align(
            features[: len(strides)],
            rois,
            strides,
            output_size,
            self.config.roi_sampling_ratio,
            self.config.roi_finest_scale,
        )

    def predict_masks(self, features: list[torch.Tensor], rois: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean over the stages of each RoI's class-mask sigmoid, (n, 28, 28)."""
        roi_features = self.pool(features, rois, self.config.mask_roi_size)
        merged = None
        for head in self.mask_heads:
            probabilities = select_class_maps(head(roi_features), labels).sigmoid()
            merged = probabilities if merged is None else merged + probabilities
        return merged / len(self.mask_heads)

    @torch.no_grad()
    def predict(
        self,
        features: list[torch.Tensor],
        proposals: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
        nms_scales: list[torch.Tensor],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """mmdetection's `CascadeRoIHead.simple_test`. `nms_scales[i]` is (valid size / original size) as
        (w, h, w, h) float32: boxes are divided by it before NMS, as mmdetection's `rescale=True` does."""
        config = self.config
        counts = [p.shape[0] for p in proposals]
        rois = boxes_to_rois(proposals)
        stage_logits = []
        for stage, head in enumerate(self.box_heads):
            class_logits, deltas = head(self.pool(features, rois, config.box_roi_size))
            stage_logits.append(class_logits)
            if stage < len(self.box_heads) - 1:
                labels = class_logits[:, :-1].argmax(dim=1)
                refined = [
                    head.regress_by_class(r[:, 1:], l, d, size)
                    for r, l, d, size in zip(rois.split(counts), labels.split(counts), deltas.split(counts), image_sizes)
                ]
                rois = torch.cat([torch.cat([r[:, :1], b], dim=1) for r, b in zip(rois.split(counts), refined)])
        mean_logits = stage_logits[0]
        for logits in stage_logits[1:]:
            mean_logits = mean_logits + logits
        mean_logits = mean_logits / float(len(stage_logits))

        last = self.box_heads[-1]
        all_boxes, all_scores, all_labels, mask_rois = [], [], [], []
        for rois_i, logits_i, deltas_i, size, scale in zip(
            rois.split(counts), mean_logits.split(counts), deltas.split(counts), image_sizes, nms_scales
        ):
            probabilities = F.softmax(logits_i, dim=-1)
            boxes = last.coder.decode(rois_i[:, 1:], deltas_i, max_shape=size)
            scale = scale.to(boxes)
            rescaled = boxes / scale.repeat(boxes.shape[-1] // 4)
            keep, labels = multiclass_nms(
                rescaled, probabilities, config.box_score_threshold, config.box_nms_threshold, config.max_detections
            )
            # `keep` indexes the flattened (RoI, class) grid; a class-agnostic head has one box per RoI
            num_classes = probabilities.shape[1] - 1
            if boxes.shape[-1] > 4:
                flat_boxes, flat_rescaled, box_index = boxes.reshape(-1, 4), rescaled.reshape(-1, 4), keep
            else:
                flat_boxes, flat_rescaled, box_index = boxes, rescaled, keep // num_classes
            all_boxes.append(flat_boxes[box_index])
            all_scores.append(probabilities[:, :-1].reshape(-1)[keep])
            all_labels.append(labels)
            # mmdetection pools the masks at `det_bboxes * scale_factor` (its rescaled boxes scaled back)
            mask_rois.append(flat_rescaled[box_index] * scale)
        masks: list[torch.Tensor] = []
        total = sum(b.shape[0] for b in mask_rois)
        if total > 0:
            merged = self.predict_masks(features, boxes_to_rois(mask_rois), torch.cat(all_labels))
            masks = list(merged.split([b.shape[0] for b in mask_rois]))
        else:
            size = config.mask_target_size
            masks = [features[0].new_zeros(0, size, size) for _ in mask_rois]
        return all_boxes, all_scores, all_labels, masks


def multiclass_nms(
    boxes: torch.Tensor, probabilities: torch.Tensor, score_threshold: float, iou_threshold: float, max_detections: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """mmdetection's `multiclass_nms`: every (RoI, class) pair with score > threshold (background excluded) is a
    candidate; mmcv-style batched NMS per class; best `max_detections`. Returns the kept indices into the flattened
    (RoI, class) grid and their labels."""
    num_classes = probabilities.shape[1] - 1
    scores = probabilities[:, :-1].reshape(-1)
    labels = torch.arange(num_classes, device=scores.device).repeat(probabilities.shape[0])
    if boxes.shape[-1] > 4:
        candidates = boxes.reshape(-1, 4)
    else:
        candidates = boxes[:, None, :].expand(-1, num_classes, 4).reshape(-1, 4)
    valid = (scores > score_threshold).nonzero(as_tuple=False).squeeze(1)
    keep = mmcv_batched_nms(candidates[valid], scores[valid], labels[valid], iou_threshold)
    if max_detections > 0:
        keep = keep[:max_detections]
    keep = valid[keep]
    return keep, labels[keep]


class CascadeMaskRCNNPreTrainedModel(PreTrainedModel):
    config: CascadeMaskRCNNConfig
    config_class = CascadeMaskRCNNConfig
    base_model_prefix = "cascade_mask_rcnn"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False

    def _initialize_weights(self, module: nn.Module, is_custom_code: bool = False) -> None:
        """`_init_weights` initialises whole heads with `transformers.initialization`, which leaves loaded tensors
        alone, so transformers' shortcut for custom code (skip a module whose own parameters are all loaded) must not
        apply: it skips a head whose classifier alone was re-sized (`ignore_mismatched_sizes`, another number of
        labels) and leaves that classifier uninitialised."""
        super()._initialize_weights(module, is_custom_code=False)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """mmdetection's initialisation: Xavier for FPN convs and shared fcs, N(0, 0.01) for the RPN and classifiers,
        N(0, 0.001) for box regressors, Kaiming (fan-out) for mask heads and box-head convs."""
        if isinstance(module, CascadeMaskRCNNFPN):
            for conv in module.modules():
                if isinstance(conv, nn.Conv2d):
                    init.xavier_uniform_(conv.weight)
                    init.zeros_(conv.bias)
        elif isinstance(module, CascadeMaskRCNNRPNHead):
            for conv in (module.conv, module.objectness_logits, module.box_deltas):
                init.normal_(conv.weight, std=0.01)
                init.zeros_(conv.bias)
        elif isinstance(module, CascadeMaskRCNNBoxHead):
            init.normal_(module.classifier.weight, std=0.01)
            init.zeros_(module.classifier.bias)
            init.normal_(module.regressor.weight, std=0.001)
            init.zeros_(module.regressor.bias)
            for fc in module.fcs:
                init.xavier_uniform_(fc.weight)
                init.zeros_(fc.bias)
        elif isinstance(module, CascadeMaskRCNNMaskHead):
            for layer in (module.upsample, module.mask_logits):
                init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                init.zeros_(layer.bias)
        elif isinstance(module, ConvNormActivation):
            init.kaiming_normal_(module.conv.weight, mode="fan_out", nonlinearity="relu")
            if module.conv.bias is not None:
                init.zeros_(module.conv.bias)
            if module.norm is not None:
                init.ones_(module.norm.weight)
                init.zeros_(module.norm.bias)
                init.zeros_(module.norm.running_mean)
                init.ones_(module.norm.running_var)
                init.zeros_(module.norm.num_batches_tracked)


def valid_sizes_from_mask(pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None) -> torch.Tensor:
    """(batch, 2) valid (height, width) per image: the extent of the 1s of `pixel_mask` (the whole padded size
    without a mask). Like mmdetection's `img_shape`, boxes are clipped to it."""
    batch, _, height, width = pixel_values.shape
    if pixel_mask is None:
        return torch.tensor([[height, width]] * batch, dtype=torch.long, device=pixel_values.device)
    if pixel_mask.shape != (batch, height, width):
        raise ValueError(
            f"pixel_mask has shape {tuple(pixel_mask.shape)} but pixel_values is {tuple(pixel_values.shape)}: give one "
            "(height, width) mask per image, 1 on the image and 0 on the padding (as the image processor returns)."
        )
    mask = pixel_mask.bool()
    heights = mask.any(dim=2).sum(dim=1)
    widths = mask.any(dim=1).sum(dim=1)
    if (heights == 0).any() or (widths == 0).any():
        raise ValueError("pixel_mask has an image with no valid pixel; every image needs a non-empty valid region.")
    return torch.stack([heights, widths], dim=1).long()


class CascadeMaskRCNNForInstanceSegmentation(CascadeMaskRCNNPreTrainedModel):
    """Cascade Mask R-CNN for object detection and instance segmentation.

    Inputs as transformers' DETR models take them: `pixel_values` (a padded batch) and `pixel_mask` (1 on each image's
    valid region), plus optional `original_sizes` (the image processor returns them) so the final NMS runs in the
    original image's frame exactly as mmdetection does. `labels` (DETR format: per image a dict with
    `class_labels`, normalised `(cx, cy, w, h)` `boxes` relative to the padded input, optional `masks` of the padded
    input's size) give a training loss.
    """

    def __init__(self, config: CascadeMaskRCNNConfig) -> None:
        super().__init__(config)
        self.backbone = load_backbone(config)
        in_channels = list(self.backbone.channels)
        self.neck = CascadeMaskRCNNFPN(in_channels, config.fpn_out_channels, config.num_fpn_levels)
        self.rpn_head = CascadeMaskRCNNRPNHead(config)
        self.roi_heads = CascadeMaskRCNNRoIHeads(config)
        self.anchor_generator = AnchorGenerator(config.anchor_strides, config.anchor_ratios, config.anchor_scales)
        self.rpn_coder = DeltaXYWHBoxCoder(config.rpn_box_stds)
        self.post_init()

    # ----------------------------------------------------------------------------------------------------- RPN
    @torch.no_grad()
    def propose(
        self,
        objectness: list[torch.Tensor],
        deltas: list[torch.Tensor],
        anchors: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
        pre_nms_top_k: int,
        post_nms_top_k: int,
    ) -> list[torch.Tensor]:
        """mmdetection's `RPNHead._get_bboxes`: (n, 5) proposals per image with their objectness."""
        config = self.config
        proposals = []
        for index, size in enumerate(image_sizes):
            level_scores, level_deltas, level_anchors, level_ids = [], [], [], []
            for level, (logits, level_delta, level_anchor) in enumerate(zip(objectness, deltas, anchors)):
                scores = logits[index].permute(1, 2, 0).reshape(-1).sigmoid()
                box_deltas = level_delta[index].permute(1, 2, 0).reshape(-1, 4)
                if pre_nms_top_k > 0 and scores.shape[0] > pre_nms_top_k:
                    ranked, order = scores.sort(descending=True)
                    scores = ranked[:pre_nms_top_k]
                    box_deltas = box_deltas[order[:pre_nms_top_k]]
                    level_anchor = level_anchor[order[:pre_nms_top_k]]
                level_scores.append(scores)
                level_deltas.append(box_deltas)
                level_anchors.append(level_anchor)
                level_ids.append(torch.full_like(scores, level, dtype=torch.long))
            scores = torch.cat(level_scores)
            ids = torch.cat(level_ids)
            boxes = self.rpn_coder.decode(torch.cat(level_anchors), torch.cat(level_deltas), max_shape=size)
            if config.rpn_min_box_size > 0:
                widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
                valid = (widths >= config.rpn_min_box_size) & (heights >= config.rpn_min_box_size)
                boxes, scores, ids = boxes[valid], scores[valid], ids[valid]
            keep = mmcv_batched_nms(boxes, scores, ids, config.rpn_nms_threshold)[:post_nms_top_k]
            proposals.append(torch.cat([boxes[keep], scores[keep, None]], dim=1))
        return proposals

    # ------------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        pixel_values: torch.FloatTensor,
        pixel_mask: torch.LongTensor | None = None,
        labels: list[dict[str, torch.Tensor]] | None = None,
        original_sizes: torch.LongTensor | list[tuple[int, int]] | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CascadeMaskRCNNOutput | tuple:
        r"""
        pixel_mask: (batch, height, width), 1 on each image's valid region (the image processor's `pixel_mask`).
        labels: DETR-format targets, one dict per image: `class_labels` (n,), `boxes` (n, 4) normalised
            (cx, cy, w, h) relative to the padded `pixel_values`, optional `masks` (n, height, width). Boxes are
            clipped to the image's valid region; boxes under one pixel wide or high after clipping are dropped.
        original_sizes: (batch, 2) (height, width) of the images before resizing. When given, the final per-class
            NMS runs on boxes divided by `valid size / original size`, exactly as mmdetection's `rescale=True`
            test does; outputs stay in the input frame either way.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be (batch, channels, height, width), got {tuple(pixel_values.shape)}.")
        sizes_tensor = valid_sizes_from_mask(pixel_values, pixel_mask)
        image_sizes = [tuple(int(v) for v in size) for size in sizes_tensor.tolist()]
        originals = self._original_sizes(original_sizes, sizes_tensor)

        backbone_maps = self.backbone(pixel_values).feature_maps
        features = self.neck(backbone_maps)
        objectness, deltas = self.rpn_head(features)
        anchors = self.anchor_generator.grid_anchors([f.shape[-2:] for f in features], pixel_values.device)

        loss, loss_dict = None, None
        if labels is not None:
            from .losses_cascade_mask_rcnn import compute_losses, prepare_targets

            targets = prepare_targets(labels, pixel_values.shape[-2:], image_sizes, self.config.num_labels)
            loss_dict = compute_losses(
                self, features, objectness, deltas, anchors, targets, image_sizes, pixel_values.shape[-2:]
            )
            loss = sum(loss_dict.values())

        pred_boxes = scores = pred_labels = masks = proposals = None
        if not self.training:
            proposals = self.propose(
                objectness,
                deltas,
                anchors,
                image_sizes,
                self.config.rpn_pre_nms_top_k_test,
                self.config.rpn_post_nms_top_k_test,
            )
            nms_scales = [
                torch.tensor([vw / ow, vh / oh, vw / ow, vh / oh], dtype=torch.float32, device=pixel_values.device)
                for (vh, vw), (oh, ow) in zip(image_sizes, originals.tolist())
            ]
            pred_boxes, scores, pred_labels, masks = self.roi_heads.predict(features, proposals, image_sizes, nms_scales)

        output = CascadeMaskRCNNOutput(
            loss=loss,
            loss_dict=loss_dict,
            pred_boxes=pred_boxes,
            scores=scores,
            labels=pred_labels,
            pred_masks=masks,
            proposals=proposals,
            image_sizes=sizes_tensor,
            original_sizes=originals,
            fpn_feature_maps=tuple(features),
            backbone_feature_maps=tuple(backbone_maps) if output_hidden_states else None,
        )
        return output if return_dict else output.to_tuple()

    @staticmethod
    def _original_sizes(original_sizes, valid_sizes: torch.Tensor) -> torch.Tensor:
        if original_sizes is None:
            return valid_sizes.clone()
        originals = torch.as_tensor(original_sizes, dtype=torch.long, device=valid_sizes.device).reshape(-1, 2)
        if originals.shape != valid_sizes.shape:
            raise ValueError(
                f"original_sizes has {originals.shape[0]} entries for a batch of {valid_sizes.shape[0]} images; "
                "give one (height, width) per image."
            )
        if (originals <= 0).any():
            raise ValueError(f"original_sizes must be positive (height, width) pairs, got {originals.tolist()}.")
        return originals


__all__ = [
    "CascadeMaskRCNNForInstanceSegmentation",
    "CascadeMaskRCNNOutput",
    "CascadeMaskRCNNPreTrainedModel",
]
