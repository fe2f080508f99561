"""Cascade Mask R-CNN image processor: mmdetection preprocessing, exact post-processing (hand-computed), pipelines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from hf_localvit import DWNetConfig
from hf_localvit.models.cascade_mask_rcnn import (
    CascadeMaskRCNNConfig,
    CascadeMaskRCNNForInstanceSegmentation,
    CascadeMaskRCNNImageProcessor,
    CascadeMaskRCNNOutput,
)
from hf_localvit.models.cascade_mask_rcnn.ops_cascade_mask_rcnn import paste_masks



pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_cascade_config(**overrides) -> CascadeMaskRCNNConfig:
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
        id2label={0: "circle", 1: "square", 2: "triangle"},
        fpn_out_channels=16,
        rpn_feat_channels=16,
        box_head_num_convs=1,
        box_head_conv_channels=16,
        box_head_fc_channels=32,
        mask_head_num_convs=1,
        mask_head_channels=16,
    )
    kwargs.update(overrides)
    return CascadeMaskRCNNConfig(**kwargs)


# ------------------------------------------------------------------------------------------------ preprocessing
def test_resize_pad_normalise_like_mmdetection():
    processor = CascadeMaskRCNNImageProcessor()
    first = np.full((480, 640, 3), 128, dtype=np.uint8)
    second = np.full((300, 1000, 3), 200, dtype=np.uint8)
    inputs = processor([first, second], return_tensors="pt")
    # mmcv: scale = min(1333 / long, 800 / short); size = int(side * scale + 0.5)
    # 480x640 -> scale 5/3 -> 800x1067; 300x1000 -> scale 1.333 -> 400x1333; batch padded to 32: 800x1344
    assert inputs["pixel_values"].shape == (2, 3, 800, 1344)
    mask = inputs["pixel_mask"]
    assert mask[0].sum() == 800 * 1067 and mask[0, :800, :1067].all()
    assert mask[1].sum() == 400 * 1333 and mask[1, :400, :1333].all()
    assert inputs["original_sizes"].tolist() == [[480, 640], [300, 1000]]
    expected = (128 - torch.tensor([123.675, 116.28, 103.53])) / torch.tensor([58.395, 57.12, 57.375])
    torch.testing.assert_close(inputs["pixel_values"][0, :, 400, 500], expected)
    assert (inputs["pixel_values"][0, :, :, 1067:] == 0).all()  # zero padding after normalisation


def test_coco_annotations_become_detr_labels_the_model_reads():
    processor = CascadeMaskRCNNImageProcessor(size={"shortest_edge": 100, "longest_edge": 200})
    image = np.zeros((50, 80, 3), dtype=np.uint8)  # -> scale 2 -> 100x160, padded to 128x160
    annotation = {"image_id": 1, "annotations": [{"bbox": [10, 5, 20, 10], "category_id": 2, "area": 200, "iscrowd": 0}]}
    inputs = processor(image, annotations=annotation, return_tensors="pt")
    assert inputs["pixel_values"].shape[-2:] == (128, 160)
    label = inputs["labels"][0]
    from hf_localvit.models.cascade_mask_rcnn.losses_cascade_mask_rcnn import prepare_targets

    (target,) = prepare_targets([label], (128, 160), [(100, 160)], num_classes=3)
    torch.testing.assert_close(target.boxes, torch.tensor([[20.0, 10.0, 60.0, 30.0]]))
    assert target.labels.tolist() == [2]


# ------------------------------------------------------------------------------------------- post-processing
def fake_outputs(boxes, scores, labels, image_size, masks=None):
    masks = masks if masks is not None else torch.ones(len(scores), 28, 28)
    return CascadeMaskRCNNOutput(
        pred_boxes=[torch.tensor(boxes, dtype=torch.float32)],
        scores=[torch.tensor(scores)],
        labels=[torch.tensor(labels)],
        pred_masks=[masks],
        image_sizes=torch.tensor([image_size]),
    )


def test_boxes_are_mapped_to_the_original_image_exactly():
    processor = CascadeMaskRCNNImageProcessor()
    outputs = fake_outputs([[15.0, 30.0, 75.0, 90.0], [0.0, 0.0, 150.0, 120.0]], [0.9, 0.3], [1, 2], (120, 150))
    # valid 120x150 of an original 160x200: scale factor 0.75 on both axes
    (result,) = processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=[(160, 200)])
    torch.testing.assert_close(result["boxes"], torch.tensor([[20.0, 40.0, 100.0, 120.0], [0.0, 0.0, 200.0, 160.0]]))
    assert result["labels"].tolist() == [1, 2]
    (result,) = processor.post_process_object_detection(outputs, threshold=0.5, target_sizes=torch.tensor([[160, 200]]))
    assert result["scores"].tolist() == pytest.approx([0.9]) and result["boxes"].shape == (1, 4)
    # no target size: the input frame
    (result,) = processor.post_process_object_detection(outputs, threshold=0.0)
    torch.testing.assert_close(result["boxes"][0], torch.tensor([15.0, 30.0, 75.0, 90.0]))


def test_anisotropic_scale_factors():
    processor = CascadeMaskRCNNImageProcessor()
    outputs = fake_outputs([[10.0, 10.0, 50.0, 40.0]], [0.8], [0], (100, 200))
    (result,) = processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=[(300, 400)])
    # x scale 200/400 = 0.5, y scale 100/300 = 1/3 -> x * 2, y * 3
    torch.testing.assert_close(result["boxes"], torch.tensor([[20.0, 30.0, 100.0, 120.0]]), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="one \\(height, width\\) each"):
        processor.post_process_object_detection(outputs, target_sizes=[(300, 400), (1, 1)])


def test_mask_pasting_hand_computed():
    # identity: a 28x28 mask pasted at box (0, 0, 28, 28) of a 28x28 image samples every mask pixel at its centre
    mask = torch.zeros(1, 28, 28)
    mask[0, :, :14] = 1.0
    mask[0, 20:, :] = 0.7
    pasted = paste_masks(mask, torch.tensor([[0.0, 0.0, 28.0, 28.0]]), 28, 28, threshold=None)
    torch.testing.assert_close(pasted, mask)
    assert torch.equal(paste_masks(mask, torch.tensor([[0.0, 0.0, 28.0, 28.0]]), 28, 28), mask >= 0.5)
    # a uniform mask in box (2, 2, 6, 6): exactly the pixels whose centres lie inside the box
    uniform = torch.full((1, 28, 28), 0.6)
    pasted = paste_masks(uniform, torch.tensor([[2.0, 2.0, 6.0, 6.0]]), 10, 10)
    expected = torch.zeros(1, 10, 10, dtype=torch.bool)
    expected[0, 2:6, 2:6] = True
    assert torch.equal(pasted, expected)
    # below the threshold nothing; exactly 0.5 counts (mmdetection's `>=`)
    assert not paste_masks(torch.full((1, 28, 28), 0.49), torch.tensor([[2.0, 2.0, 6.0, 6.0]]), 10, 10).any()
    assert paste_masks(torch.full((1, 28, 28), 0.5), torch.tensor([[2.0, 2.0, 6.0, 6.0]]), 10, 10).sum() == 16


def test_instance_segmentation_output_at_the_original_size():
    processor = CascadeMaskRCNNImageProcessor()
    outputs = fake_outputs([[1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 6.0, 6.0]], [0.6, 0.9], [0, 1], (10, 10))
    (result,) = processor.post_process_instance_segmentation(outputs, threshold=0.0, target_sizes=[(20, 20)])
    masks = result["masks"]
    assert masks.shape == (2, 20, 20) and masks.dtype == torch.bool
    expected = torch.zeros(2, 20, 20, dtype=torch.bool)
    expected[0, 2:6, 2:6] = True
    expected[1, 4:12, 4:12] = True
    assert torch.equal(masks, expected)
    segmentation = result["segmentation"]
    assert segmentation.shape == (20, 20) and segmentation[0, 0] == -1
    assert (segmentation[4:6, 4:6] == 1).all()  # overlap: the higher score wins
    assert (segmentation[2:4, 2:4] == 0).all()
    assert [s["label_id"] for s in result["segments_info"]] == [0, 1]
    assert result["segments_info"][1]["score"] == pytest.approx(0.9)
    assert not hasattr(processor, "post_process_panoptic_segmentation")


# ------------------------------------------------------------------------------------------------- pipelines
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_cascade")
    torch.manual_seed(0)
    model = CascadeMaskRCNNForInstanceSegmentation(tiny_cascade_config()).eval()
    model.save_pretrained(folder)
    CascadeMaskRCNNImageProcessor(size={"shortest_edge": 96, "longest_edge": 160}).save_pretrained(folder)
    return folder


def test_object_detection_pipeline(tiny_folder):
    detector = pipeline("object-detection", model=str(tiny_folder), device="cpu")
    image = Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype("uint8"))
    predictions = detector(image, threshold=0.0)
    assert 0 < len(predictions) <= 100
    for prediction in predictions:
        assert set(prediction) == {"score", "label", "box"}
        assert prediction["label"] in {"circle", "square", "triangle"}
        box = prediction["box"]
        assert all(isinstance(box[k], int) for k in ("xmin", "ymin", "xmax", "ymax"))
        assert 0 <= box["xmin"] <= box["xmax"] <= 120 and 0 <= box["ymin"] <= box["ymax"] <= 90
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True)


def test_instance_segmentation_pipeline(tiny_folder):
    segmenter = pipeline("image-segmentation", model=str(tiny_folder), device="cpu")
    image = Image.fromarray((np.random.default_rng(1).random((90, 120, 3)) * 255).astype("uint8"))
    predictions = segmenter(image, subtask="instance", threshold=0.0)
    assert predictions and all(p["mask"].size == (120, 90) for p in predictions)
    assert {p["label"] for p in predictions} <= {"circle", "square", "triangle"}
