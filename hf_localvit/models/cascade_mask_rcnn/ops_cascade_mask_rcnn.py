"""Box geometry with mmdetection 2.x semantics, built on `torchvision.ops` (nms, roi_align, box_iou).

torchvision's detection classes compute similar things with different details; where we deliberately do not use
them, the difference is named here:

- `torchvision.models.detection.anchor_utils.AnchorGenerator` rounds its base anchors to integers; mmdetection 2.x
  keeps them fractional (`AnchorGenerator` with `center_offset=0`). -> `AnchorGenerator` below.
- `torchvision.models.detection._utils.BoxCoder` divides by weights (= 1 / std), computes centres as
  `x1 + 0.5 * w` and never clips; mmdetection's `DeltaXYWHBBoxCoder` multiplies by stds, uses `(x1 + x2) * 0.5`,
  clamps dw/dh to |log(16 / 1000)| and clips the boxes to the image. -> `DeltaXYWHBoxCoder`.
- `torchvision.ops.batched_nms` offsets boxes per class only for small inputs and otherwise loops over classes
  on the raw boxes; mmcv's `batched_nms` always runs NMS on boxes shifted by `class * (max_coordinate + 1)`, whose
  float32 rounding decides near-threshold cases. -> `mmcv_batched_nms`.
- `torchvision.ops.MultiScaleRoIAlign` assigns levels with `floor(4 + log2(sqrt(area) / 224) + 1e-6)`;
  mmdetection uses `floor(log2(sqrt(area) / 56 + 1e-6))` (eps inside the log). -> `map_rois_to_levels`.
- `torchvision.models.detection.roi_heads.paste_masks_in_image` pastes by resizing the mask to the integer box;
  mmdetection samples it with `grid_sample` at pixel centres. -> `paste_masks` (in the image processor).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import nms, roi_align

# mmdetection's `wh_ratio_clip=16 / 1000`: predicted log-scales are clamped to +-log(1000 / 16).
MAX_LOG_SCALE = abs(math.log(16 / 1000))
# mmcv's batched_nms switches to one NMS call per class above this many boxes (same boxes, same result).
MMCV_NMS_SPLIT_THRESHOLD = 10000


class AnchorGenerator:
    """mmdetection 2.x anchors: per level, `len(ratios) * len(scales)` base anchors centred on (0, 0) (ratio-major),
    shifted to every feature-map position `(x * stride, y * stride)`; positions row-major, anchors innermost."""

    def __init__(self, strides: Sequence[int], ratios: Sequence[float], scales: Sequence[float]) -> None:
        self.strides = list(strides)
        self.ratios = [float(r) for r in ratios]
        self.scales = [float(s) for s in scales]

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.ratios) * len(self.scales)

    def base_anchors(self, stride: int, device: torch.device) -> torch.Tensor:
        """(A, 4) anchors of one position at the origin. Built on demand (never on the meta device)."""
        ratios = torch.tensor(self.ratios, dtype=torch.float32, device=device)
        scales = torch.tensor(self.scales, dtype=torch.float32, device=device)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        # Same float32 operation order as mmdetection: (size * ratio) * scale, centre 0.
        widths = (stride * w_ratios[:, None] * scales[None, :]).view(-1)
        heights = (stride * h_ratios[:, None] * scales[None, :]).view(-1)
        return torch.stack([-0.5 * widths, -0.5 * heights, 0.5 * widths, 0.5 * heights], dim=-1)

    def grid_anchors(self, feature_sizes: Sequence[tuple[int, int]], device: torch.device) -> list[torch.Tensor]:
        anchors = []
        for stride, (height, width) in zip(self.strides, feature_sizes):
            base = self.base_anchors(stride, device)
            shift_x = torch.arange(0, width, device=device) * stride
            shift_y = torch.arange(0, height, device=device) * stride
            shift_xx = shift_x.repeat(height)
            shift_yy = shift_y.view(-1, 1).repeat(1, width).view(-1)
            shifts = torch.stack([shift_xx, shift_yy, shift_xx, shift_yy], dim=-1).to(torch.float32)
            anchors.append((base[None, :, :] + shifts[:, None, :]).view(-1, 4))
        return anchors

    def valid_flags(
        self, feature_sizes: Sequence[tuple[int, int]], pad_shape: tuple[int, int], device: torch.device
    ) -> list[torch.Tensor]:
        """Anchors whose feature position lies inside the padded image (mmdetection's `valid_flags`)."""
        flags = []
        pad_h, pad_w = pad_shape
        per_location = self.num_anchors_per_location
        for stride, (height, width) in zip(self.strides, feature_sizes):
            valid_h = min(int(math.ceil(pad_h / stride)), height)
            valid_w = min(int(math.ceil(pad_w / stride)), width)
            valid_y = torch.zeros(height, dtype=torch.bool, device=device)
            valid_x = torch.zeros(width, dtype=torch.bool, device=device)
            valid_y[:valid_h] = True
            valid_x[:valid_w] = True
            valid = (valid_y[:, None] & valid_x[None, :]).reshape(-1)
            flags.append(valid[:, None].expand(-1, per_location).reshape(-1))
        return flags


class DeltaXYWHBoxCoder:
    """mmdetection's `DeltaXYWHBBoxCoder` (`bbox2delta` / `delta2bbox`), zero means, the given stds."""

    def __init__(self, stds: Sequence[float]) -> None:
        self.stds = tuple(float(s) for s in stds)

    def encode(self, proposals: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        proposals = proposals.float()
        targets = targets.float()
        px = (proposals[..., 0] + proposals[..., 2]) * 0.5
        py = (proposals[..., 1] + proposals[..., 3]) * 0.5
        pw = proposals[..., 2] - proposals[..., 0]
        ph = proposals[..., 3] - proposals[..., 1]
        gx = (targets[..., 0] + targets[..., 2]) * 0.5
        gy = (targets[..., 1] + targets[..., 3]) * 0.5
        gw = targets[..., 2] - targets[..., 0]
        gh = targets[..., 3] - targets[..., 1]
        deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
        return deltas / deltas.new_tensor(self.stds)

    def decode(
        self, rois: torch.Tensor, deltas: torch.Tensor, max_shape: tuple[int, int] | torch.Tensor | None = None
    ) -> torch.Tensor:
        """`rois` (..., 4) and `deltas` (..., 4 * k) -> boxes (..., 4 * k), clipped to `max_shape` = (height, width)
        when given (x to [0, width], y to [0, height])."""
        repeats = deltas.size(-1) // 4
        stds = deltas.new_tensor(self.stds).view(1, -1).repeat(1, repeats)
        denorm = deltas * stds + deltas.new_zeros(1)
        dx, dy = denorm[..., 0::4], denorm[..., 1::4]
        dw = denorm[..., 2::4].clamp(min=-MAX_LOG_SCALE, max=MAX_LOG_SCALE)
        dh = denorm[..., 3::4].clamp(min=-MAX_LOG_SCALE, max=MAX_LOG_SCALE)
        x1, y1, x2, y2 = rois[..., 0], rois[..., 1], rois[..., 2], rois[..., 3]
        px = ((x1 + x2) * 0.5).unsqueeze(-1)
        py = ((y1 + y2) * 0.5).unsqueeze(-1)
        pw = (x2 - x1).unsqueeze(-1)
        ph = (y2 - y1).unsqueeze(-1)
        gw = pw * dw.exp()
        gh = ph * dh.exp()
        gx = px + pw * dx
        gy = py + ph * dy
        boxes = torch.stack([gx - gw * 0.5, gy - gh * 0.5, gx + gw * 0.5, gy + gh * 0.5], dim=-1).view(deltas.shape)
        if max_shape is not None:
            boxes = clip_boxes(boxes, max_shape)
        return boxes


def clip_boxes(boxes: torch.Tensor, max_shape: tuple[int, int] | torch.Tensor) -> torch.Tensor:
    """Clip (..., 4k) boxes to x in [0, width], y in [0, height] (mmdetection clips to `img_shape`, not width - 1)."""
    height, width = (float(v) for v in max_shape)
    limits = boxes.new_tensor([width, height, width, height]).repeat(boxes.size(-1) // 4)
    boxes = torch.where(boxes < 0, boxes.new_zeros(()), boxes)
    return torch.where(boxes > limits, limits, boxes)


def mmcv_batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Per-group NMS exactly as mmcv's `batched_nms`: boxes are shifted by `group * (max_coordinate + 1)` in the
    boxes' dtype and `torchvision.ops.nms` runs on the shifted boxes (per group above 10000 boxes, as mmcv does).
    Returns the kept indices, by decreasing score."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    max_coordinate = boxes.max()
    offsets = groups.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    boxes_for_nms = boxes + offsets[:, None]
    if boxes_for_nms.shape[0] < MMCV_NMS_SPLIT_THRESHOLD:
        return nms(boxes_for_nms, scores, iou_threshold)
    kept = torch.zeros_like(scores, dtype=torch.bool)
    for group in torch.unique(groups):
        members = (groups == group).nonzero(as_tuple=False).view(-1)
        kept[members[nms(boxes_for_nms[members], scores[members], iou_threshold)]] = True
    keep = kept.nonzero(as_tuple=False).view(-1)
    order = scores[keep].sort(descending=True).indices
    return keep[order]


def map_rois_to_levels(rois: torch.Tensor, num_levels: int, finest_scale: int) -> torch.Tensor:
    """mmdetection's `SingleRoIExtractor.map_roi_levels`: level `floor(log2(sqrt(w * h) / finest_scale + 1e-6))`,
    clamped to the available levels. `rois` is (n, 5) with the batch index first."""
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    levels = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).long()


def multi_level_roi_align(
    features: Sequence[torch.Tensor],
    rois: torch.Tensor,
    strides: Sequence[int],
    output_size: int,
    sampling_ratio: int,
    finest_scale: int,
) -> torch.Tensor:
    """Pool each RoI from its FPN level with `torchvision.ops.roi_align(aligned=True)` (mmcv's RoIAlign)."""
    channels = features[0].shape[1]
    pooled = features[0].new_zeros(rois.shape[0], channels, output_size, output_size)
    if rois.shape[0] == 0:
        return pooled + sum(feature.sum() * 0 for feature in features)
    levels = map_rois_to_levels(rois, len(features), finest_scale)
    for level, (feature, stride) in enumerate(zip(features, strides)):
        indices = (levels == level).nonzero(as_tuple=False).squeeze(1)
        if indices.numel() > 0:
            pooled[indices] = roi_align(
                feature,
                rois[indices].to(feature.dtype),
                output_size=output_size,
                spatial_scale=1.0 / stride,
                sampling_ratio=sampling_ratio,
                aligned=True,
            )
        elif pooled.requires_grad or feature.requires_grad:
            # keep every level in the autograd graph (unused levels would otherwise get no gradient at all)
            pooled = pooled + feature.sum() * 0
    return pooled


def boxes_to_rois(boxes_per_image: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack per-image (n_i, >=4) boxes into (sum n_i, 5) RoIs with the image index first (mmdet's `bbox2roi`)."""
    rois = []
    for index, boxes in enumerate(boxes_per_image):
        rois.append(torch.cat([boxes.new_full((boxes.shape[0], 1), float(index)), boxes[:, :4]], dim=-1))
    return torch.cat(rois, dim=0)


def paste_masks(
    masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int, threshold: float | None = 0.5
) -> torch.Tensor:
    """Paste (n, m, m) mask probabilities into (n, height, width) images at `boxes` (x1, y1, x2, y2).

    mmdetection's `_do_paste_mask`: the mask is bilinearly sampled (`grid_sample`, `align_corners=False`, zero
    padding) at every pixel centre inside a window of one pixel around the box, zero elsewhere; with a threshold the
    result is `prob >= threshold`. Each box is pasted on its own window, as mmdetection does on the CPU.
    """
    count = masks.shape[0]
    dtype = torch.bool if threshold is not None else torch.float32
    output = torch.zeros(count, height, width, dtype=dtype, device=masks.device)
    boxes = boxes.to(torch.float32)
    for index in range(count):
        box = boxes[index]
        x0_int = int(torch.clamp(box[0].floor() - 1, min=0).to(torch.int32))
        y0_int = int(torch.clamp(box[1].floor() - 1, min=0).to(torch.int32))
        x1_int = int(torch.clamp(box[2].ceil() + 1, max=width).to(torch.int32))
        y1_int = int(torch.clamp(box[3].ceil() + 1, max=height).to(torch.int32))
        if x1_int <= x0_int or y1_int <= y0_int:
            continue
        img_y = torch.arange(y0_int, y1_int, device=masks.device, dtype=torch.float32) + 0.5
        img_x = torch.arange(x0_int, x1_int, device=masks.device, dtype=torch.float32) + 0.5
        img_y = (img_y - box[1]) / (box[3] - box[1]) * 2 - 1
        img_x = (img_x - box[0]) / (box[2] - box[0]) * 2 - 1
        # a zero-width/height box divides by zero: mmdetection maps the infinities to the mask centre
        img_x = torch.where(torch.isinf(img_x), torch.zeros_like(img_x), img_x)
        img_y = torch.where(torch.isinf(img_y), torch.zeros_like(img_y), img_y)
        grid = torch.stack(
            [img_x[None, :].expand(img_y.numel(), -1), img_y[:, None].expand(-1, img_x.numel())], dim=-1
        )
        pasted = F.grid_sample(masks[index][None, None].to(torch.float32), grid[None], align_corners=False)[0, 0]
        if threshold is not None:
            pasted = pasted >= threshold
        output[index, y0_int:y1_int, x0_int:x1_int] = pasted
    return output


__all__ = [
    "AnchorGenerator",
    "DeltaXYWHBoxCoder",
    "boxes_to_rois",
    "clip_boxes",
    "map_rois_to_levels",
    "mmcv_batched_nms",
    "multi_level_roi_align",
    "paste_masks",
]
