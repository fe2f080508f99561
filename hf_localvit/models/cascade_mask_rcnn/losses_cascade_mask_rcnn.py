"""Training targets and losses of Cascade Mask R-CNN, as mmdetection 2.x computes them.

- RPN: anchors inside the image (`allowed_border`), max-IoU assignment (pos >= 0.7, neg < 0.3, low-quality matches
  >= 0.3), 256 anchors sampled at random with up to half positives; sigmoid cross-entropy on objectness and
  smooth-L1 (beta 1/9) on encoded deltas, both averaged over the sampled anchors.
- Each cascade stage: the ground truths are added to the proposals, max-IoU assignment at the stage's IoU
  (no low-quality matches), 512 RoIs sampled with up to 25% positives; softmax cross-entropy over the classes and
  background, GIoU loss (weight 10) on the decoded class-specific boxes, per-pixel BCE of the positives' 28x28
  class masks against the ground-truth masks RoI-aligned into their boxes. Losses are weighted per stage
  (1, 0.5, 0.25); between stages the sampled RoIs (ground truths excluded) are refined by the stage's regression.

Inputs are transformers' DETR-format `labels`; `prepare_targets` validates and converts them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, box_iou, generalized_box_iou_loss, roi_align
from transformers.utils import logging

from .ops_cascade_mask_rcnn import boxes_to_rois
from .modeling_cascade_mask_rcnn import select_class_maps

logger = logging.get_logger(__name__)

# Ground-truth boxes narrower or lower than this (in input pixels, after clipping to the image) are dropped, as
# mmdetection's COCO loader drops boxes under one pixel: they cannot be matched and their deltas are infinite.
MIN_GT_BOX_SIDE = 1.0


@dataclass
class DetectionTargets:
    """One image's ground truth in the input frame: (n, 4) x1y1x2y2 pixel boxes, (n,) labels, (n, H, W) masks."""

    boxes: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None


def prepare_targets(
    labels: list[dict[str, torch.Tensor]],
    input_size: tuple[int, int],
    image_sizes: list[tuple[int, int]],
    num_classes: int,
) -> list[DetectionTargets]:
    """Validate DETR-format targets and convert them to pixel boxes in the input frame.

    Errors (with the image index): a number of dicts other than the batch size, missing `class_labels`/`boxes`,
    non-integer or out-of-range class ids, non-finite boxes or negative widths/heights, masks of the wrong shape.
    Filtering (documented behaviour): boxes are clipped to the image's valid region (mmdetection clips to the
    image too) and boxes then under one pixel wide or high are dropped with their labels and masks. An image with no
    boxes is valid: all its samples are background.
    """
    if not isinstance(labels, (list, tuple)) or len(labels) != len(image_sizes):
        count = len(labels) if isinstance(labels, (list, tuple)) else type(labels).__name__
        raise ValueError(f"labels must be a list with one dict per image ({len(image_sizes)}), got {count}.")
    input_h, input_w = (int(v) for v in input_size)
    targets = []
    for index, (target, (valid_h, valid_w)) in enumerate(zip(labels, image_sizes)):
        where = f"labels[{index}]"
        if not hasattr(target, "keys") or "class_labels" not in target or "boxes" not in target:
            raise ValueError(f"{where} must be a dict with 'class_labels' and 'boxes' (DETR format).")
        classes = torch.as_tensor(target["class_labels"])
        boxes = torch.as_tensor(target["boxes"], dtype=torch.float32)
        if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
            raise ValueError(f"{where}['class_labels'] must be integer class indices, got dtype {classes.dtype}.")
        classes = classes.reshape(-1).long()
        if boxes.numel() == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.dim() != 2 or boxes.shape[1] != 4 or boxes.shape[0] != classes.shape[0]:
            raise ValueError(
                f"{where}: 'boxes' must be (n, 4) for n = {classes.shape[0]} class labels, got {tuple(boxes.shape)}."
            )
        if classes.numel() and (classes.min() < 0 or classes.max() >= num_classes):
            bad = classes[(classes < 0) | (classes >= num_classes)].unique().tolist()
            raise ValueError(
                f"{where}: class ids {bad} are outside [0, {num_classes}). Map the dataset's category ids to "
                "contiguous indices (config.label2id) and make sure config.num_labels covers them."
            )
        if not torch.isfinite(boxes).all():
            raise ValueError(f"{where}: 'boxes' contains NaN or infinite values.")
        if (boxes[:, 2:] < 0).any():
            raise ValueError(f"{where}: boxes must be (center_x, center_y, width, height) with width, height >= 0.")
        pixels = box_convert(boxes, "cxcywh", "xyxy") * boxes.new_tensor([input_w, input_h, input_w, input_h])
        limits = pixels.new_tensor([valid_w, valid_h, valid_w, valid_h])
        pixels = torch.minimum(pixels.clamp(min=0), limits)
        keep = ((pixels[:, 2] - pixels[:, 0]) >= MIN_GT_BOX_SIDE) & ((pixels[:, 3] - pixels[:, 1]) >= MIN_GT_BOX_SIDE)
        if not keep.all():
            logger.warning_once(
                "Some ground-truth boxes are under one pixel wide or high inside the image (after clipping to its "
                "valid region) and were dropped from the loss."
            )
        masks = target.get("masks") if hasattr(target, "get") else None
        if masks is not None:
            masks = torch.as_tensor(masks)
            if masks.dim() != 3 or masks.shape[0] != classes.shape[0] or tuple(masks.shape[1:]) != (input_h, input_w):
                raise ValueError(
                    f"{where}: 'masks' must be (n, {input_h}, {input_w}) (one mask per box at the padded input "
                    f"size), got {tuple(masks.shape)}."
                )
            masks = masks[keep]
        targets.append(DetectionTargets(boxes=pixels[keep], labels=classes[keep], masks=masks))
    return targets


# ------------------------------------------------------------------------------------------ assignment, sampling
def max_iou_assign(
    boxes: torch.Tensor,
    gt_boxes: torch.Tensor,
    positive_iou: float,
    negative_iou: float,
    min_positive_iou: float,
    match_low_quality: bool,
) -> torch.Tensor:
    """mmdetection's `MaxIoUAssigner`: per box, 0 = negative, -1 = ignored, k + 1 = positive for ground truth k.

    Negative below `negative_iou`, positive from `positive_iou`; with `match_low_quality`, each ground truth also
    takes every box of its highest IoU when that IoU reaches `min_positive_iou` (`gt_max_assign_all=True`)."""
    num_boxes = boxes.shape[0]
    if gt_boxes.shape[0] == 0:
        return torch.zeros(num_boxes, dtype=torch.long, device=boxes.device)
    assigned = torch.full((num_boxes,), -1, dtype=torch.long, device=boxes.device)
    if num_boxes == 0:
        return assigned
    overlaps = box_iou(gt_boxes, boxes)
    max_overlaps, argmax = overlaps.max(dim=0)
    assigned[(max_overlaps >= 0) & (max_overlaps < negative_iou)] = 0
    positive = max_overlaps >= positive_iou
    assigned[positive] = argmax[positive] + 1
    if match_low_quality:
        gt_max = overlaps.max(dim=1).values
        for gt_index in range(gt_boxes.shape[0]):
            if gt_max[gt_index] >= min_positive_iou:
                assigned[overlaps[gt_index] == gt_max[gt_index]] = gt_index + 1
    return assigned


def random_sample(assigned: torch.Tensor, num: int, positive_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mmdetection's `RandomSampler` (`neg_pos_ub=-1`): up to `num * positive_fraction` positives at random, the rest
    of `num` negatives at random. Returns (positive indices, negative indices)."""
    positives = (assigned > 0).nonzero(as_tuple=False).view(-1)
    wanted = int(num * positive_fraction)
    if positives.numel() > wanted:
        positives = positives[torch.randperm(positives.numel(), device=positives.device)[:wanted]]
    negatives = (assigned == 0).nonzero(as_tuple=False).view(-1)
    wanted = num - positives.numel()
    if negatives.numel() > wanted:
        negatives = negatives[torch.randperm(negatives.numel(), device=negatives.device)[:wanted]]
    return positives, negatives


# ------------------------------------------------------------------------------------------------------- RPN
def rpn_losses(model, objectness, deltas, anchors, targets, image_sizes, input_size) -> dict[str, torch.Tensor]:
    config = model.config
    feature_sizes = [logits.shape[-2:] for logits in objectness]
    flat_anchors = torch.cat(anchors)
    valid = torch.cat(model.anchor_generator.valid_flags(feature_sizes, tuple(input_size), flat_anchors.device))
    all_logits, all_deltas, all_targets, all_weights, all_box_targets, all_box_weights = [], [], [], [], [], []
    num_samples = 0
    for index, (target, (height, width)) in enumerate(zip(targets, image_sizes)):
        border = config.rpn_allowed_border
        inside = valid.clone()
        if border >= 0:
            inside &= (
                (flat_anchors[:, 0] >= -border)
                & (flat_anchors[:, 1] >= -border)
                & (flat_anchors[:, 2] < width + border)
                & (flat_anchors[:, 3] < height + border)
            )
        inside_index = inside.nonzero(as_tuple=False).view(-1)
        assigned = max_iou_assign(
            flat_anchors[inside_index],
            target.boxes,
            config.rpn_positive_iou,
            config.rpn_negative_iou,
            config.rpn_min_positive_iou,
            match_low_quality=True,
        )
        positives, negatives = random_sample(assigned, config.rpn_batch_size_per_image, config.rpn_positive_fraction)
        num_samples += max(positives.numel(), 1) + max(negatives.numel(), 1)
        labels = flat_anchors.new_zeros(flat_anchors.shape[0])
        weights = flat_anchors.new_zeros(flat_anchors.shape[0])
        box_targets = torch.zeros_like(flat_anchors)
        box_weights = torch.zeros_like(flat_anchors)
        positive_anchors = inside_index[positives]
        labels[positive_anchors] = 1.0
        weights[positive_anchors] = 1.0
        weights[inside_index[negatives]] = 1.0
        if positives.numel():
            matched = target.boxes[assigned[positives] - 1]
            box_targets[positive_anchors] = model.rpn_coder.encode(flat_anchors[positive_anchors], matched)
            box_weights[positive_anchors] = 1.0
        all_logits.append(torch.cat([level[index].permute(1, 2, 0).reshape(-1) for level in objectness]))
        all_deltas.append(torch.cat([level[index].permute(1, 2, 0).reshape(-1, 4) for level in deltas]))
        all_targets.append(labels)
        all_weights.append(weights)
        all_box_targets.append(box_targets)
        all_box_weights.append(box_weights)
    logits, weights = torch.cat(all_logits), torch.cat(all_weights)
    loss_cls = (F.binary_cross_entropy_with_logits(logits, torch.cat(all_targets), reduction="none") * weights).sum()
    box_loss = F.smooth_l1_loss(
        torch.cat(all_deltas), torch.cat(all_box_targets), reduction="none", beta=config.rpn_smooth_l1_beta
    )
    loss_bbox = (box_loss * torch.cat(all_box_weights)).sum()
    return {"loss_rpn_cls": loss_cls / num_samples, "loss_rpn_bbox": loss_bbox / num_samples}


# ------------------------------------------------------------------------------------------------- cascade
def mask_targets(
    positive_boxes: torch.Tensor, gt_masks: torch.Tensor, assigned_gt: torch.Tensor, size: int
) -> torch.Tensor:
    """mmdetection's `mask_target`: each positive's ground-truth mask RoI-aligned into its (clipped) box at
    size x size, binarised at 0.5."""
    height, width = gt_masks.shape[-2:]
    boxes = positive_boxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    rois = torch.cat([torch.arange(boxes.shape[0], device=boxes.device, dtype=boxes.dtype)[:, None], boxes], dim=1)
    sampled = roi_align(
        gt_masks[assigned_gt][:, None].to(boxes.dtype), rois, output_size=size, spatial_scale=1.0, sampling_ratio=0, aligned=True
    )
    return (sampled[:, 0] >= 0.5).to(positive_boxes.dtype)


def cascade_losses(model, features, proposals, targets, image_sizes) -> dict[str, torch.Tensor]:
    config = model.config
    roi_heads = model.roi_heads
    num_classes = config.num_labels
    losses: dict[str, torch.Tensor] = {}
    for stage, (box_head, mask_head) in enumerate(zip(roi_heads.box_heads, roi_heads.mask_heads)):
        weight = config.cascade_stage_loss_weights[stage]
        iou = config.cascade_iou_thresholds[stage]
        sampled_boxes, sampled_labels, matched_boxes, positive_counts, is_gt, matched_index = [], [], [], [], [], []
        for image_proposals, target in zip(proposals, targets):
            assigned = max_iou_assign(image_proposals, target.boxes, iou, iou, iou, match_low_quality=False)
            candidates = image_proposals
            num_gt = target.boxes.shape[0]
            if num_gt:  # `add_gt_as_proposals=True`
                candidates = torch.cat([target.boxes.to(image_proposals), image_proposals])
                assigned = torch.cat([torch.arange(1, num_gt + 1, device=assigned.device), assigned])
            positives, negatives = random_sample(assigned, config.roi_batch_size_per_image, config.roi_positive_fraction)
            gt_index = assigned[positives] - 1
            sampled_boxes.append(torch.cat([candidates[positives], candidates[negatives]]))
            sampled_labels.append(
                torch.cat([target.labels[gt_index], gt_index.new_full((negatives.numel(),), num_classes)])
            )
            matched_boxes.append(target.boxes[gt_index])
            matched_index.append(gt_index)
            positive_counts.append(positives.numel())
            is_gt.append(positives < num_gt)
        rois = boxes_to_rois(sampled_boxes)
        labels = torch.cat(sampled_labels)
        total = rois.shape[0]
        class_logits, box_deltas = box_head(roi_heads.pool(features, rois, config.box_roi_size))
        if total == 0:
            zero = class_logits.sum() * 0 + box_deltas.sum() * 0
            losses[f"s{stage}.loss_cls"] = losses[f"s{stage}.loss_bbox"] = zero
            break
        losses[f"s{stage}.loss_cls"] = weight * F.cross_entropy(class_logits, labels, reduction="sum") / total
        positive = labels < num_classes
        if positive.any():
            decoded = box_head.coder.decode(rois[:, 1:], box_deltas)
            decoded = decoded.view(total, -1, 4)
            chosen = decoded[positive, labels[positive]] if decoded.shape[1] > 1 else decoded[positive, 0]
            giou = generalized_box_iou_loss(chosen, torch.cat(matched_boxes).to(chosen), reduction="sum")
            losses[f"s{stage}.loss_bbox"] = weight * config.box_loss_weight * giou / total
        else:
            losses[f"s{stage}.loss_bbox"] = box_deltas[positive].sum()

        # masks of the positives (images without masks are skipped)
        mask_rois, mask_labels, mask_goals = [], [], []
        for image, (boxes, image_labels, count, gt_index, target) in enumerate(
            zip(sampled_boxes, sampled_labels, positive_counts, matched_index, targets)
        ):
            if count == 0 or target.masks is None:
                continue
            positive_boxes = boxes[:count]
            mask_rois.append(torch.cat([positive_boxes.new_full((count, 1), float(image)), positive_boxes], dim=1))
            mask_labels.append(image_labels[:count])
            mask_goals.append(mask_targets(positive_boxes, target.masks, gt_index, config.mask_target_size))
        if mask_rois:
            logits = mask_head(roi_heads.pool(features, torch.cat(mask_rois), config.mask_roi_size))
            logits = select_class_maps(logits, torch.cat(mask_labels))
            losses[f"s{stage}.loss_mask"] = weight * F.binary_cross_entropy_with_logits(logits, torch.cat(mask_goals))
        elif any(target.masks is not None for target in targets):
            losses[f"s{stage}.loss_mask"] = sum(p.sum() * 0 for p in mask_head.parameters())

        if stage < len(roi_heads.box_heads) - 1:  # refine the RoIs for the next stage (ground truths dropped)
            with torch.no_grad():
                refine_labels = torch.where(labels == num_classes, class_logits[:, :-1].argmax(dim=1), labels)
                counts = [boxes.shape[0] for boxes in sampled_boxes]
                next_proposals = []
                for boxes, image_labels, deltas, size, gt_flags in zip(
                    sampled_boxes, refine_labels.split(counts), box_deltas.detach().split(counts), image_sizes, is_gt
                ):
                    refined = box_head.regress_by_class(boxes, image_labels, deltas, size)
                    keep = torch.ones(boxes.shape[0], dtype=torch.bool, device=boxes.device)
                    keep[: gt_flags.numel()] = ~gt_flags
                    next_proposals.append(refined[keep])
                proposals = next_proposals
    return losses


def compute_losses(model, features, objectness, deltas, anchors, targets, image_sizes, input_size) -> dict[str, torch.Tensor]:
    """All losses of one batch: RPN, then the cascade on proposals made with the training settings."""
    config = model.config
    losses = rpn_losses(model, objectness, deltas, anchors, targets, image_sizes, input_size)
    proposals = model.propose(
        objectness, deltas, anchors, image_sizes, config.rpn_pre_nms_top_k_train, config.rpn_post_nms_top_k_train
    )
    proposals = [p[:, :4].detach() for p in proposals]
    losses.update(cascade_losses(model, features, proposals, targets, image_sizes))
    return losses


__all__ = [
    "DetectionTargets",
    "cascade_losses",
    "compute_losses",
    "mask_targets",
    "max_iou_assign",
    "prepare_targets",
    "random_sample",
    "rpn_losses",
]
