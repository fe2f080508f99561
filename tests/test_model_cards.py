"""Model cards: metadata that huggingface_hub parses, the original work's results, determinism, and the committed
model_cards/ being what the generator writes."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import REPO_ROOT
from huggingface_hub import ModelCard, metadata_load

from hf_localvit import DWNetConfig, dwnet_preset_config
from hf_localvit.cards import (
    RELEASED_MODELS,
    build_model_card,
    load_measured_results,
    released_model_for_config,
    write_model_cards,
)

CARDS_DIR = REPO_ROOT / "model_cards"
ORIGINAL = {
    "dwnet-tiny": {"accuracy": 81.2},
    "dynamic-dwnet-tiny": {"accuracy": 81.8},
    "dwnet-base": {"accuracy": 83.2},
    "dynamic-dwnet-base": {"accuracy": 83.2},
    "i-dynamic-dwnet-tiny": {},
    "i-dynamic-dwnet-base": {},
    "upernet-dwnet-tiny": {"mean_iou": 45.5},
    "upernet-dynamic-dwnet-tiny": {"mean_iou": 45.7},
    "upernet-dwnet-base": {"mean_iou": 48.3},
    "upernet-dynamic-dwnet-base": {"mean_iou": 48.0},
    "cascade-mask-rcnn-dwnet-tiny": {"box_ap": 49.9, "mask_ap": 43.4},
    "cascade-mask-rcnn-dynamic-dwnet-tiny": {"box_ap": 50.5, "mask_ap": 43.7},
    "cascade-mask-rcnn-dwnet-base": {"box_ap": 51.0, "mask_ap": 44.1},
    "cascade-mask-rcnn-dynamic-dwnet-base": {"box_ap": 51.2, "mask_ap": 44.4},
}
PIPELINE_TAG = {"dwnet": "image-classification", "upernet": "image-segmentation", "cascade": "object-detection"}


def load_generate_script():
    spec = importlib.util.spec_from_file_location("generate_model_cards", CARDS_DIR / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_card_per_released_model_is_committed():
    assert sorted(RELEASED_MODELS) == sorted(ORIGINAL)
    committed = sorted(path.parent.name for path in CARDS_DIR.glob("*/README.md"))
    assert committed == sorted(ORIGINAL)


@pytest.mark.parametrize("name", sorted(ORIGINAL))
def test_committed_card_metadata(name):
    path = CARDS_DIR / name / "README.md"
    metadata = metadata_load(path)
    assert metadata["license"] == "mit"
    assert metadata["library_name"] == "transformers"
    kind = name.split("-")[0] if name.startswith(("upernet", "cascade")) else "dwnet"
    assert metadata["pipeline_tag"] == PIPELINE_TAG[kind]
    assert "dwnet" in metadata["tags"] and "imagenet-1k" in metadata["datasets"]

    card = ModelCard.load(path)  # parses the model-index into EvalResults, or raises
    results = {r.metric_type: r.metric_value for r in card.data.eval_results or []}
    assert results == ORIGINAL[name]
    for result in card.data.eval_results or []:
        assert result.source_url == "https://github.com/Atten4Vis/DemystifyLocalViT"
        assert result.dataset_split == "validation"
    text = card.text
    assert "@inproceedings{han2022connection," in text and "MIT licence" in text
    assert f'"hf-localvit/{name}"' in text  # the snippets use the default org
    for section in ("## Intended uses", "## How to use", "## Preprocessing", "## Training data", "## Limitations",
                    "## Evaluation results", "## Citation"):
        assert section in text, section
    if not ORIGINAL[name]:
        assert "model-index" not in metadata
        assert "No checkpoint of this variant was released by the original authors" in text


def test_parameter_and_mac_counts_are_stated():
    text = (CARDS_DIR / "dynamic-dwnet-base" / "README.md").read_text()
    assert "| Parameters | 161.6M |" in text and "| Multiply-accumulates (224x224) | 12.9G |" in text
    upernet = (CARDS_DIR / "upernet-dynamic-dwnet-base" / "README.md").read_text()
    assert "| Parameters | about 195M (original work) |" in upernet
    assert "not stated in our sources" in (CARDS_DIR / "cascade-mask-rcnn-dwnet-tiny" / "README.md").read_text()


def test_generator_is_deterministic_and_committed_cards_are_up_to_date(tmp_path):
    generate = load_generate_script()
    first, second = tmp_path / "a", tmp_path / "b"
    assert generate.main(["--output-dir", str(first)]) == 0
    assert generate.main(["--output-dir", str(second)]) == 0
    for name in ORIGINAL:
        produced = (first / name / "README.md").read_bytes()
        assert produced == (second / name / "README.md").read_bytes(), name
        assert produced == (CARDS_DIR / name / "README.md").read_bytes(), (
            f"model_cards/{name}/README.md is out of date: run `python model_cards/generate.py`"
        )
    assert generate.main(["--check"]) == 0
    (first / "dwnet-tiny" / "README.md").write_text("stale\n")
    assert generate.main(["--check", "--output-dir", str(first)]) == 1


def test_measured_results_and_org(tmp_path):
    measured_file = tmp_path / "measured.json"
    measured_file.write_text(json.dumps({"results": {"dwnet-tiny": [
        {"metric": "top1", "value": 81.19, "notes": "converted weights, ImageNet-1K val"},
        {"metric": "top5", "value": 95.6},
    ]}}))
    (path,) = write_model_cards(tmp_path / "cards", org="my-org", measured=load_measured_results(measured_file),
                                names=["dwnet-tiny"])
    card = ModelCard.load(path)
    values = {(r.metric_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert values == {
        ("accuracy", "Top-1 accuracy (original work)"): 81.2,
        ("accuracy", "Top-1 accuracy (measured on these weights)"): 81.19,
        ("top_5_accuracy", "Top-5 accuracy (measured on these weights)"): 95.6,
    }
    # One model-index entry mixes the original and measured numbers: it names no single source.
    assert all(r.source_url is None for r in card.data.eval_results)
    row = "| ImageNet-1K | Top-1 accuracy | 81.19 | measured on these weights: converted weights, ImageNet-1K val |"
    assert row in card.text
    assert 'model="my-org/dwnet-tiny"' in card.text

    measured_file.write_text(json.dumps({"results": {"dwnet-tiny": [{"metric": "miou", "value": 40}]}}))
    with pytest.raises(ValueError, match="use one of top1, top5"):
        load_measured_results(measured_file)
    measured_file.write_text(json.dumps({"results": {"resnet-50": []}}))
    with pytest.raises(ValueError, match="unknown model"):
        load_measured_results(measured_file)


def test_card_round_trips_through_huggingface_hub():
    card = build_model_card("upernet-dwnet-tiny", repo_id="x/y")
    again = ModelCard(str(card))
    assert str(again) == str(card)
    assert again.data.to_dict()["model-index"][0]["name"] == "y"


def test_released_model_for_config():
    def saved(config: DWNetConfig, architecture: str = "DWNetForImageClassification") -> dict:
        return {**config.to_dict(), "architectures": [architecture]}

    assert released_model_for_config(saved(dwnet_preset_config("dynamic-dwnet-base", num_labels=1000))) == (
        "dynamic-dwnet-base"
    )
    assert released_model_for_config(saved(dwnet_preset_config("dwnet-tiny", num_labels=10))) is None  # fine-tuned
    assert released_model_for_config(saved(dwnet_preset_config("dwnet-tiny"), "DWNetBackbone")) is None
    backbone = dwnet_preset_config("dwnet-base", downstream=True).to_dict()
    def labels(count: int) -> dict:
        return {str(index): f"class {index}" for index in range(count)}

    upernet = {"model_type": "upernet", "backbone_config": backbone, "id2label": labels(150)}
    assert released_model_for_config(upernet) == "upernet-dwnet-base"
    cascade = {"model_type": "cascade_mask_rcnn", "backbone_config": backbone, "id2label": labels(80)}
    assert released_model_for_config(cascade) == "cascade-mask-rcnn-dwnet-base"
