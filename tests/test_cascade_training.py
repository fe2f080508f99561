"""Cascade Mask R-CNN training: target assignment, losses that decrease, and clear handling of bad labels."""

from __future__ import annotations

import math

import pytest
import torch

from hf_localvit import DWNetConfig
from hf_localvit.models.cascade_mask_rcnn import (
    CascadeMaskRCNNConfig,
    CascadeMaskRCNNForInstanceSegmentation,
)
from hf_localvit.models.cascade_mask_rcnn.losses_cascade_mask_rcnn import (
    max_iou_assign,
    prepare_targets,
    random_sample,
)
from hf_localvit.models.cascade_mask_rcnn.ops_cascade_mask_rcnn import AnchorGenerator, DeltaXYWHBoxCoder



pytestmark = pytest.mark.usefixtures("single_thread")

HEIGHT, WIDTH = 64, 96
COLOURS = torch.tensor([[2.0, -1.0, -1.0], [-1.0, 2.0, -1.0], [-1.0, -1.0, 2.0]])


def tiny_model(**overrides) -> CascadeMaskRCNNForInstanceSegmentation:
    backbone = DWNetConfig(
        embed_dim=16,
        depths=[1, 1, 1, 1],
        drop_path_rate=0.0,
        pad_to_kernel_multiple=True,
        backbone_output_norm="batch_norm",
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    kwargs = dict(
        backbone_config=backbone,
        id2label={0: "red", 1: "green", 2: "blue"},
        fpn_out_channels=16,
        rpn_feat_channels=16,
        box_head_num_convs=1,
        box_head_conv_channels=16,
        box_head_fc_channels=32,
        mask_head_num_convs=1,
        mask_head_channels=16,
        rpn_batch_size_per_image=64,
        roi_batch_size_per_image=64,
        rpn_pre_nms_top_k_train=200,
        rpn_post_nms_top_k_train=100,
    )
    kwargs.update(overrides)
    return CascadeMaskRCNNForInstanceSegmentation(CascadeMaskRCNNConfig(**kwargs))


def shapes_batch():
    """Two images with coloured rectangles of known class, DETR-format labels with masks."""
    boxes = [torch.tensor([[0.3, 0.4, 0.3, 0.4], [0.75, 0.5, 0.2, 0.5]]), torch.tensor([[0.4, 0.5, 0.5, 0.6]])]
    classes = [torch.tensor([0, 2]), torch.tensor([1])]
    pixel_values = torch.zeros(2, 3, HEIGHT, WIDTH)
    pixel_mask = torch.ones(2, HEIGHT, WIDTH, dtype=torch.long)
    pixel_mask[1, :, 80:] = 0
    labels = []
    for image, (image_boxes, image_classes) in enumerate(zip(boxes, classes)):
        masks = torch.zeros(len(image_boxes), HEIGHT, WIDTH)
        for k, ((cx, cy, w, h), label) in enumerate(zip(image_boxes.tolist(), image_classes.tolist())):
            y0, y1 = round((cy - h / 2) * HEIGHT), round((cy + h / 2) * HEIGHT)
            x0, x1 = round((cx - w / 2) * WIDTH), round((cx + w / 2) * WIDTH)
            masks[k, y0:y1, x0:x1] = 1
            pixel_values[image, :, y0:y1, x0:x1] = COLOURS[label][:, None, None]
        labels.append({"class_labels": image_classes, "boxes": image_boxes, "masks": masks})
    return pixel_values, pixel_mask, labels


def test_losses_decrease_and_reach_every_part():
    model = tiny_model().train()
    pixel_values, pixel_mask, labels = shapes_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for step in range(10):
        outputs = model(pixel_values, pixel_mask=pixel_mask, labels=labels)
        if step == 0:
            assert set(outputs.loss_dict) == {
                "loss_rpn_cls",
                "loss_rpn_bbox",
                *(f"s{s}.loss_{part}" for s in range(3) for part in ("cls", "bbox", "mask")),
            }
            assert outputs.pred_boxes is None  # no inference pass while training
        optimizer.zero_grad()
        outputs.loss.backward()
        if step == 0:
            for name in ("backbone.embeddings", "neck.", "rpn_head.", "roi_heads.box_heads.2.", "roi_heads.mask_heads.0."):
                grads = [p.grad for n, p in model.named_parameters() if n.startswith(name)]
                assert any(g is not None and g.abs().sum() > 0 for g in grads), name
        optimizer.step()
        history.append(outputs.loss.item())
    assert all(math.isfinite(v) for v in history)
    assert sum(history[-3:]) / 3 < 0.6 * sum(history[:3]) / 3, history


def test_eval_mode_with_labels_gives_loss_and_detections():
    model = tiny_model().eval()
    pixel_values, pixel_mask, labels = shapes_batch()
    with torch.no_grad():
        outputs = model(pixel_values, pixel_mask=pixel_mask, labels=labels)
    assert torch.isfinite(outputs.loss)
    assert len(outputs.pred_boxes) == 2 and len(outputs.pred_masks) == 2


def test_empty_annotations_and_missing_masks_are_valid():
    model = tiny_model().train()
    pixel_values, pixel_mask, labels = shapes_batch()
    labels[1] = {"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}
    labels[0] = {k: v for k, v in labels[0].items() if k != "masks"}  # detection-only targets: no mask loss
    outputs = model(pixel_values, pixel_mask=pixel_mask, labels=labels)
    assert torch.isfinite(outputs.loss) and not any("mask" in k for k in outputs.loss_dict)
    outputs.loss.backward()
    nothing = [{"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}] * 2
    outputs = model(pixel_values, pixel_mask=pixel_mask, labels=nothing)
    assert torch.isfinite(outputs.loss) and outputs.loss_dict["loss_rpn_bbox"] == 0


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"class_labels": torch.tensor([3]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}, r"outside \[0, 3\)"),
        ({"class_labels": torch.tensor([-1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}, r"outside \[0, 3\)"),
        ({"class_labels": torch.tensor([0.0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}, "integer class"),
        ({"class_labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, -0.2, 0.2]])}, "width, height >= 0"),
        ({"class_labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, float("nan"), 0.2, 0.2]])}, "NaN"),
        ({"class_labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}, r"\(n, 4\)"),
        ({"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}, "class_labels"),
        (
            {"class_labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]), "masks": torch.ones(1, 8, 8)},
            "masks",
        ),
    ],
)
def test_bad_labels_raise_clear_errors(target, message):
    with pytest.raises(ValueError, match=message):
        prepare_targets([target], (HEIGHT, WIDTH), [(HEIGHT, WIDTH)], num_classes=3)


def test_label_count_must_match_the_batch():
    model = tiny_model().train()
    pixel_values, pixel_mask, labels = shapes_batch()
    with pytest.raises(ValueError, match="one dict per image"):
        model(pixel_values, pixel_mask=pixel_mask, labels=labels[:1])


def test_boxes_outside_the_image_are_clipped_and_degenerate_boxes_dropped():
    target = {
        "class_labels": torch.tensor([0, 1, 2, 1]),
        # past the right edge of the valid region | zero width | entirely in the padding | normal
        "boxes": torch.tensor([[0.9, 0.5, 0.4, 0.2], [0.5, 0.5, 0.0, 0.3], [0.95, 0.5, 0.05, 0.2], [0.25, 0.25, 0.25, 0.25]]),
        "masks": torch.zeros(4, HEIGHT, WIDTH),
    }
    (prepared,) = prepare_targets([target], (HEIGHT, WIDTH), [(HEIGHT, 80)], num_classes=3)
    assert prepared.labels.tolist() == [0, 1]
    torch.testing.assert_close(prepared.boxes[0], torch.tensor([67.2, 25.6, 80.0, 38.4]))
    torch.testing.assert_close(prepared.boxes[1], torch.tensor([12.0, 8.0, 36.0, 24.0]))
    assert prepared.masks.shape == (2, HEIGHT, WIDTH)


def test_max_iou_assigner_and_random_sampler():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 1 with gt 0
            [0.0, 0.0, 10.0, 5.0],  # IoU 0.5 with gt 0
            [20.0, 20.0, 30.0, 24.0],  # IoU 0.4 with gt 1 (its best): a low-quality match
            [50.0, 50.0, 60.0, 60.0],  # IoU 0
        ]
    )
    assert max_iou_assign(boxes, gt, 0.7, 0.3, 0.3, match_low_quality=True).tolist() == [1, -1, 2, 0]
    assert max_iou_assign(boxes, gt, 0.7, 0.3, 0.3, match_low_quality=False).tolist() == [1, -1, -1, 0]
    assert max_iou_assign(boxes, gt, 0.5, 0.5, 0.5, match_low_quality=False).tolist() == [1, 1, 0, 0]
    assert max_iou_assign(boxes, gt[:0], 0.5, 0.5, 0.5, match_low_quality=False).tolist() == [0, 0, 0, 0]
    assigned = torch.tensor([1] * 30 + [0] * 100 + [-1] * 10)
    positives, negatives = random_sample(assigned, 64, 0.25)
    assert positives.numel() == 16 and negatives.numel() == 48
    assert (assigned[positives] > 0).all() and (assigned[negatives] == 0).all()
    positives, negatives = random_sample(torch.tensor([1] * 3 + [0] * 100), 64, 0.25)
    assert positives.numel() == 3 and negatives.numel() == 61


def test_anchors_and_box_coder_follow_mmdetection():
    generator = AnchorGenerator([4], [0.5, 1.0, 2.0], [8.0])
    anchors = generator.grid_anchors([(1, 2)], torch.device("cpu"))[0]
    # ratio 0.5: w = 32 / sqrt(0.5) = 45.25, h = 32 * sqrt(0.5) = 22.63 (not rounded); centred on (0, 0) then (4, 0)
    half_w, half_h = 16 / math.sqrt(0.5), 16 * math.sqrt(0.5)
    torch.testing.assert_close(anchors[0], torch.tensor([-half_w, -half_h, half_w, half_h]))
    torch.testing.assert_close(anchors[1], torch.tensor([-16.0, -16.0, 16.0, 16.0]))
    torch.testing.assert_close(anchors[3], torch.tensor([4 - half_w, -half_h, 4 + half_w, half_h]))
    coder = DeltaXYWHBoxCoder([0.1, 0.1, 0.2, 0.2])
    proposals = torch.tensor([[10.0, 10.0, 30.0, 50.0]])
    targets = torch.tensor([[12.0, 8.0, 36.0, 44.0]])
    torch.testing.assert_close(coder.decode(proposals, coder.encode(proposals, targets)), targets)
    # huge log-scales are clamped to log(1000 / 16) and the result clipped to the image
    decoded = coder.decode(proposals, torch.tensor([[0.0, 0.0, 100.0, 0.0]]), max_shape=(60, 100))
    torch.testing.assert_close(decoded, torch.tensor([[0.0, 10.0, 100.0, 50.0]]))


def test_class_agnostic_heads_train_and_predict():
    model = tiny_model(box_reg_class_agnostic=True, mask_class_agnostic=True).train()
    assert model.roi_heads.box_heads[0].regressor.out_features == 4
    assert model.roi_heads.mask_heads[0].mask_logits.out_channels == 1
    pixel_values, pixel_mask, labels = shapes_batch()
    outputs = model(pixel_values, pixel_mask=pixel_mask, labels=labels)
    outputs.loss.backward()
    assert torch.isfinite(outputs.loss)
    model.eval()
    with torch.no_grad():
        outputs = model(pixel_values, pixel_mask=pixel_mask)
    assert all(m.shape[1:] == (28, 28) for m in outputs.pred_masks)


def test_any_autobackbone_and_config_round_trip(tmp_path):
    from transformers import AutoConfig, AutoModelForObjectDetection, ResNetConfig

    backbone = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], out_features=["stage1", "stage2", "stage3", "stage4"]
    )
    model = tiny_model(backbone_config=backbone).eval()
    pixel_values, pixel_mask, _ = shapes_batch()
    with torch.no_grad():
        expected = model(pixel_values, pixel_mask=pixel_mask)
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.backbone_config.model_type == "resnet" and config.id2label[2] == "blue"
    reloaded = AutoModelForObjectDetection.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        outputs = reloaded(pixel_values, pixel_mask=pixel_mask)
    for ours, theirs in zip(outputs.pred_boxes, expected.pred_boxes):
        torch.testing.assert_close(ours, theirs)
    default = CascadeMaskRCNNConfig()
    assert default.backbone_config.model_type == "dwnet" and default.backbone_config.embed_dim == 96
    assert default.num_labels == 80 and default.cascade_iou_thresholds == [0.5, 0.6, 0.7]
    with pytest.raises(ValueError, match="cascade_box_stds"):
        CascadeMaskRCNNConfig(cascade_iou_thresholds=[0.5, 0.6])


def test_mmcv_batched_nms_split_path_keeps_the_same_boxes():
    from hf_localvit.models.cascade_mask_rcnn import ops_cascade_mask_rcnn as ops

    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(12000, 2, generator=generator) * 200
    boxes = torch.cat([xy, xy + 5 + torch.rand(12000, 2, generator=generator) * 40], dim=1)
    scores = torch.rand(12000, generator=generator)
    groups = torch.randint(0, 80, (12000,), generator=generator)
    split = ops.mmcv_batched_nms(boxes, scores, groups, 0.5)  # 12000 >= 10000: one NMS per class
    offsets = groups.to(boxes) * (boxes.max() + 1)
    single = ops.nms(boxes + offsets[:, None], scores, 0.5)
    assert set(split.tolist()) == set(single.tolist())
    assert torch.all(scores[split][:-1] >= scores[split][1:])
