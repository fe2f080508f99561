"""Cascade Mask R-CNN reproduces the ORIGINAL mmdetection 2.11 model's outputs stored in ../shared/reference."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModelForObjectDetection

from hf_localvit.convert.cascade_mask_rcnn import convert_cascade_mask_rcnn_checkpoint
from hf_localvit.convert.dwnet import convert_dwnet_checkpoint
from hf_localvit.models.cascade_mask_rcnn import (
    CascadeMaskRCNNConfig,
    CascadeMaskRCNNForInstanceSegmentation,
)



pytestmark = pytest.mark.usefixtures("single_thread")

FIXTURES = ["cascade_mask_rcnn_dwnet_small", "cascade_mask_rcnn_dynamic_dwnet_small"]
FPN_TOLERANCE = 1e-4
BOX_TOLERANCE = 1e-3
SCORE_TOLERANCE = 1e-4


def match_sets(ours, reference, box_tolerance=BOX_TOLERANCE, score_tolerance=SCORE_TOLERANCE):
    """Greedy one-to-one matching of (boxes, scores, labels-or-None) sets. Returns the matched index pairs and the
    unmatched indices of each side."""
    boxes, scores, labels = ours
    ref_boxes, ref_scores, ref_labels = reference
    free = set(range(len(ref_scores)))
    pairs, unmatched = [], []
    for i in range(len(scores)):
        candidates = [
            j
            for j in free
            if (labels is None or labels[i] == ref_labels[j])
            and abs(float(scores[i] - ref_scores[j])) <= score_tolerance
            and float((boxes[i] - ref_boxes[j]).abs().max()) <= box_tolerance
        ]
        if candidates:
            j = min(candidates, key=lambda j: float((boxes[i] - ref_boxes[j]).abs().max()))
            free.remove(j)
            pairs.append((i, j))
        else:
            unmatched.append(i)
    return pairs, unmatched, sorted(free)


def assert_same_set(ours, reference, cut_off: float | None, what: str):
    pairs, ours_left, ref_left = match_sets(ours, reference)
    # Only items whose score is within the tolerance of the list's cut-off may differ (near-equal scores there).
    for side, left, scores in (("ours", ours_left, ours[1]), ("reference", ref_left, reference[1])):
        for index in left:
            assert cut_off is not None and abs(float(scores[index]) - cut_off) <= SCORE_TOLERANCE, (
                f"{what}: {side} item {index} (score {float(scores[index]):.6f}) has no counterpart"
            )
    return pairs


@pytest.fixture(scope="module", params=FIXTURES)
def converted(request, reference_dir, tmp_path_factory):
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    convert_cascade_mask_rcnn_checkpoint(str(reference_dir / f"{name}.pth"), folder)
    model = AutoModelForObjectDetection.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    io = load_file(reference_dir / f"{name}_io.safetensors")
    meta = json.loads((reference_dir / f"{name}.json").read_text())["img_meta"]
    pixel_mask = torch.zeros(io["pixel_values"].shape[0], *io["pixel_values"].shape[-2:], dtype=torch.long)
    pixel_mask[:, : meta["img_shape"][0], : meta["img_shape"][1]] = 1
    with torch.no_grad():
        outputs = model(io["pixel_values"], pixel_mask=pixel_mask, original_sizes=[meta["ori_shape"]])
    return name, model, processor, io, meta, outputs


def test_converted_folder_and_config(converted):
    name, model, _, _, _, _ = converted
    assert isinstance(model, CascadeMaskRCNNForInstanceSegmentation)
    config = model.config
    assert isinstance(config, CascadeMaskRCNNConfig)
    assert config.num_labels == 80 and config.id2label[0] == "person"
    assert (config.fpn_out_channels, config.box_head_fc_channels, config.mask_head_channels) == (32, 64, 32)
    assert config.box_head_num_convs == 4 and config.box_head_num_fcs == 1 and config.box_head_norm == "batch_norm"
    assert config.backbone_config.mixer == ("dynamic" if "dynamic" in name else "static")


def test_fpn_maps_match(converted):
    _, _, _, io, _, outputs = converted
    assert len(outputs.fpn_feature_maps) == 5
    for level, feature_map in enumerate(outputs.fpn_feature_maps):
        expected = io[f"fpn_{level}"]
        assert feature_map.shape == expected.shape
        assert (feature_map - expected).abs().max().item() <= FPN_TOLERANCE, level


def test_rpn_proposals_match_as_sets(converted):
    _, model, _, io, _, outputs = converted
    ours, reference = outputs.proposals[0], io["rpn_proposals"]
    full = reference.shape[0] >= model.config.rpn_post_nms_top_k_test
    cut_off = float(reference[:, 4].min()) if full else None
    pairs = assert_same_set(
        (ours[:, :4], ours[:, 4], None), (reference[:, :4], reference[:, 4], None), cut_off, "proposals"
    )
    assert len(pairs) == reference.shape[0] == ours.shape[0]


def test_detections_and_masks_match(converted):
    _, model, processor, io, meta, outputs = converted
    result = processor.post_process_instance_segmentation(outputs, threshold=None, target_sizes=[meta["ori_shape"]])[0]
    assert result["masks"].shape == (len(result["scores"]), *meta["ori_shape"])
    full = io["det_scores"].shape[0] >= model.config.max_detections
    cut_off = float(io["det_scores"].min()) if full else None
    pairs = assert_same_set(
        (result["boxes"], result["scores"], result["labels"]),
        (io["det_boxes"], io["det_scores"], io["det_labels"]),
        cut_off,
        "detections",
    )
    assert len(pairs) >= len(io["det_scores"]) - 2
    ours, theirs = torch.tensor(pairs).T
    differing = (result["masks"][ours].to(torch.uint8) != io["det_masks"][theirs]).sum().item()
    foreground = int(io["det_masks"].sum())
    # measured: 0 differing pixels for both fixtures; allow only threshold-boundary flips
    assert differing <= max(1, foreground // 10000), f"{differing} mask pixels differ (of {foreground} foreground)"
    # object detection post-processing gives the same boxes
    detections = processor.post_process_object_detection(outputs, threshold=None, target_sizes=[meta["ori_shape"]])[0]
    torch.testing.assert_close(detections["boxes"], result["boxes"], rtol=0, atol=0)


def test_batch_of_two_images_matches_single_images(converted):
    """Per-image valid sizes in one padded batch: each image's detections equal its own run (same padded size)."""
    _, model, _, io, meta, outputs = converted
    image = io["pixel_values"]
    other = torch.zeros_like(image)
    other[..., :100, :128] = image[..., :100, :128].flip(-1)
    masks = torch.zeros(2, *image.shape[-2:], dtype=torch.long)
    masks[0, : meta["img_shape"][0], : meta["img_shape"][1]] = 1
    masks[1, :100, :128] = 1
    with torch.no_grad():
        batch = model(torch.cat([image, other]), pixel_mask=masks, original_sizes=[meta["ori_shape"], (100, 128)])
        single = model(other, pixel_mask=masks[1:], original_sizes=[(100, 128)])
    torch.testing.assert_close(batch.pred_boxes[0], outputs.pred_boxes[0], rtol=0, atol=1e-4)
    torch.testing.assert_close(batch.scores[0], outputs.scores[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(batch.pred_boxes[1], single.pred_boxes[0], rtol=0, atol=1e-4)
    torch.testing.assert_close(batch.labels[1], single.labels[0])
    assert batch.pred_boxes[1][:, 2].max() <= 128 and batch.pred_boxes[1][:, 3].max() <= 100  # clipped to valid size


@pytest.mark.parametrize("name", ["dwnet_small_backbone", "dynamic_dwnet_small_backbone"])
def test_backbone_parity_through_the_detector(name, reference_dir, tmp_path):
    """The detector's backbone (built through AutoBackbone from `backbone_config`) gives the original feature maps."""
    backbone = convert_dwnet_checkpoint(str(reference_dir / f"{name}.pth"), tmp_path / "backbone", backbone_only=True)
    config = CascadeMaskRCNNConfig(
        backbone_config=backbone.config,
        num_labels=3,
        fpn_out_channels=16,
        rpn_feat_channels=16,
        box_head_conv_channels=16,
        box_head_fc_channels=16,
        mask_head_channels=16,
    )
    model = CascadeMaskRCNNForInstanceSegmentation(config).eval()
    model.backbone.load_state_dict(backbone.state_dict(), strict=True)
    io = load_file(reference_dir / f"{name}_io.safetensors")
    with torch.no_grad():
        outputs = model(io["pixel_values"], output_hidden_states=True)
    assert len(outputs.backbone_feature_maps) == 4
    for index, feature_map in enumerate(outputs.backbone_feature_maps):
        assert (feature_map - io[f"feature_map_{index}"]).abs().max().item() <= 1e-4, index
