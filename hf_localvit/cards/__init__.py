"""Model cards of the released models: one template (`template.TEMPLATE`) plus data (`models.RELEASED_MODELS` and,
optionally, results we measured ourselves), rendered with `huggingface_hub`'s `ModelCard` / `ModelCardData` /
`EvalResult`.

    from hf_localvit.cards import build_model_card
    build_model_card("dwnet-tiny", repo_id="my-org/dwnet-tiny").save("converted/dwnet-tiny/README.md")

`python model_cards/generate.py` writes every card into `model_cards/<name>/README.md`; `hf-localvit card NAME`
prints or writes one.

Measured results are a JSON file mapping model names to lists of results (values in percent):

    {"results": {"dwnet-tiny": [{"metric": "top1", "value": 81.19,
                                 "notes": "converted weights, ImageNet-1K val, PIL backend"}]}}

`metric` is one of `models.METRICS` valid for the model's task (`top1`, `top5`; `miou`; `box_ap`, `mask_ap`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .models import (
    BIBTEX,
    CLASSIFICATION,
    DETECTION,
    KIND_INFO,
    METRICS,
    METRICS_BY_KIND,
    MIXER_DESCRIPTION,
    ORIGINAL_REPO_URL,
    PAPER_TITLE,
    PAPER_VENUE,
    RELEASED_MODELS,
    SEGMENTATION,
    ReleasedModel,
)
from .template import TEMPLATE

DEFAULT_ORG = "hf-localvit"
LICENSE = "mit"
ORIGINAL_SOURCE_NAME = "Han et al., ICLR 2022 (original work)"
MEASURED_RESULTS_FILE = "measured_results.json"


@dataclass(frozen=True)
class MeasuredResult:
    metric: str
    value: float
    notes: str = ""


def repo_id_for(name: str, org: str = DEFAULT_ORG) -> str:
    return f"{org}/{name}"


def default_measured_results_path() -> Path | None:
    """`model_cards/measured_results.json` of the source checkout this package runs from, if there is one."""
    path = Path(__file__).resolve().parents[2] / "model_cards" / MEASURED_RESULTS_FILE
    return path if path.is_file() else None


def load_measured_results(path: str | Path | None) -> dict[str, list[MeasuredResult]]:
    """Read and check a measured-results file (see the module docstring). `None` gives no results."""
    if path is None:
        return {}
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    entries = data.get("results") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: expected an object with a 'results' object mapping model names to lists.")
    measured: dict[str, list[MeasuredResult]] = {}
    for name, results in entries.items():
        if name not in RELEASED_MODELS:
            raise ValueError(f"{path}: unknown model {name!r}. Known: {', '.join(RELEASED_MODELS)}.")
        allowed = METRICS_BY_KIND[RELEASED_MODELS[name].kind]
        if not isinstance(results, list):
            raise ValueError(f"{path}: results of {name!r} must be a list.")
        for result in results:
            metric, value = result.get("metric"), result.get("value")
            if metric not in allowed:
                raise ValueError(f"{path}: {name!r} has metric {metric!r}; use one of {', '.join(allowed)}.")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{path}: {name!r} {metric} value must be a number (percent), got {value!r}.")
            measured.setdefault(name, []).append(MeasuredResult(metric, float(value), str(result.get("notes", ""))))
    return measured


def _format_value(value: float) -> str:
    return f"{value:.1f}" if round(value, 1) == value else f"{value:.2f}"


def _eval_results(model: ReleasedModel, measured: Iterable[MeasuredResult]) -> list[EvalResult]:
    """Original results first, then measured ones. A model-index entry (task, dataset, split) has one `source`:
    it names the original work only where every metric of the entry is the original work's."""
    results: list[EvalResult] = []
    for key, value in model.original_results.items():
        metric = METRICS[key]
        results.append(
            EvalResult(
                task_type=metric.task_type,
                task_name=metric.task_name,
                dataset_type=metric.dataset_type,
                dataset_name=metric.dataset_name,
                dataset_split=metric.dataset_split,
                metric_type=metric.metric_type,
                metric_name=f"{metric.metric_name} (original work)",
                metric_value=value,
                source_name=ORIGINAL_SOURCE_NAME,
                source_url=ORIGINAL_REPO_URL,
            )
        )
    for result in measured:
        metric = METRICS[result.metric]
        results.append(
            EvalResult(
                task_type=metric.task_type,
                task_name=metric.task_name,
                dataset_type=metric.dataset_type,
                dataset_name=metric.dataset_name,
                dataset_split=metric.dataset_split,
                metric_type=metric.metric_type,
                metric_name=f"{metric.metric_name} (measured on these weights)",
                metric_value=result.value,
            )
        )
    mixed = {r.unique_identifier for r in results if r.source_url is None}
    for result in results:
        if result.unique_identifier in mixed:
            result.source_name = result.source_url = None
    return results


def _snippets(model: ReleasedModel, repo_id: str) -> list[dict[str, str]]:
    if model.kind == CLASSIFICATION:
        return [
            {
                "intro": "With the `pipeline` API:",
                "code": f"""from transformers import pipeline

classifier = pipeline("image-classification", model="{repo_id}", trust_remote_code=True)
for prediction in classifier("cat.jpg", top_k=5):
    print(f"{{prediction['label']:<30}} {{prediction['score']:.3f}}")""",
            },
            {
                "intro": "With the image processor and the model:",
                "code": f"""import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

processor = AutoImageProcessor.from_pretrained("{repo_id}")
model = AutoModelForImageClassification.from_pretrained("{repo_id}", trust_remote_code=True).eval()

image = Image.open("cat.jpg").convert("RGB")
with torch.no_grad():
    logits = model(**processor(image, return_tensors="pt")).logits
probabilities = logits.softmax(-1)[0]
for score, index in zip(*probabilities.topk(5)):
    print(f"{{model.config.id2label[index.item()]:<30}} {{score.item():.3f}}")""",
            },
        ]
    if model.kind == SEGMENTATION:
        return [
            {
                "intro": (
                    "With the `pipeline` API (needs the `hf_localvit` package, which registers the DWNet backbone):"
                ),
                "code": f"""import hf_localvit  # registers the DWNet backbone with transformers
from transformers import pipeline

segmenter = pipeline("image-segmentation", model="{repo_id}")
for segment in segmenter("scene.jpg"):
    print(segment["label"], segment["mask"].size)""",
            },
            {
                "intro": "With the image processor and `UperNetForSemanticSegmentation`:",
                "code": f"""import torch
from PIL import Image
import hf_localvit  # registers the DWNet backbone with transformers
from transformers import AutoImageProcessor, UperNetForSemanticSegmentation

processor = AutoImageProcessor.from_pretrained("{repo_id}")
model = UperNetForSemanticSegmentation.from_pretrained("{repo_id}").eval()

image = Image.open("scene.jpg").convert("RGB")
with torch.no_grad():
    outputs = model(**processor(image, return_tensors="pt"))
segmentation = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]
print(sorted(model.config.id2label[index] for index in segmentation.unique().tolist()))""",
            },
        ]
    return [
        {
            "intro": "With the `pipeline` API (needs the `hf_localvit` package, which registers the model):",
            "code": f"""import hf_localvit  # registers Cascade Mask R-CNN and the DWNet backbone with transformers
from transformers import pipeline

detector = pipeline("object-detection", model="{repo_id}")
for detection in detector("street.jpg", threshold=0.5):
    print(detection["label"], round(detection["score"], 3), detection["box"])""",
        },
        {
            "intro": "With the image processor and `AutoModelForObjectDetection` (boxes and instance masks):",
            "code": f"""import torch
from PIL import Image
import hf_localvit  # registers Cascade Mask R-CNN and the DWNet backbone with transformers
from transformers import AutoImageProcessor, AutoModelForObjectDetection

processor = AutoImageProcessor.from_pretrained("{repo_id}")
model = AutoModelForObjectDetection.from_pretrained("{repo_id}").eval()

image = Image.open("street.jpg").convert("RGB")
with torch.no_grad():
    outputs = model(**processor(image, return_tensors="pt"))
instances = processor.post_process_instance_segmentation(outputs, threshold=0.5, target_sizes=[image.size[::-1]])[0]
for score, label, box, mask in zip(instances["scores"], instances["labels"], instances["boxes"], instances["masks"]):
    name = model.config.id2label[label.item()]
    print(name, round(score.item(), 3), [round(x, 1) for x in box.tolist()], int(mask.sum()), "mask pixels")""",
        },
    ]


_TASK_LABEL = {
    CLASSIFICATION: "Image classification (ImageNet-1K, 1000 classes)",
    SEGMENTATION: "Semantic segmentation (ADE20K, 150 classes)",
    DETECTION: "Object detection and instance segmentation (COCO, 80 classes)",
}
_TRAINING_DATA = {
    CLASSIFICATION: "ImageNet-1K",
    SEGMENTATION: "ImageNet-1K for the backbone, then ADE20K",
    DETECTION: "ImageNet-1K for the backbone, then COCO 2017",
}
_ORIGINAL_SOURCE = {
    SEGMENTATION: "the original mmsegmentation checkpoint",
    DETECTION: "the original mmdetection checkpoint",
}
_MIXER_LABEL = {"static": "static", "dynamic": "dynamic", "inhomogeneous": "inhomogeneous dynamic"}


def _context(model: ReleasedModel, repo_id: str, measured: list[MeasuredResult]) -> dict[str, Any]:
    from ..models.dwnet import dwnet_preset_config

    config = dwnet_preset_config(model.backbone)
    size_label = {"tiny": "tiny (T)", "base": "base (B)"}.get(model.size, model.size)
    if model.kind == CLASSIFICATION:
        summary = (
            f"**{model.title}** (`{model.name}`) is an ImageNet-1K image classifier: DWNet at the {size_label} size, "
            f"a Swin-like hierarchical vision backbone whose spatial mixer is {MIXER_DESCRIPTION[config.mixer]}."
        )
        has_original = model.original_checkpoint is not None
        original_source = f"the original checkpoint `{model.original_checkpoint}`"
    else:
        task = (
            "a semantic segmentation model for ADE20K (150 classes): UperNet"
            if model.kind == SEGMENTATION
            else "an object detection and instance segmentation model for COCO (80 classes): "
            "Cascade Mask R-CNN with FPN"
        )
        summary = (
            f"**{model.title}** (`{model.name}`) is {task} on a DWNet backbone at the {size_label} size, whose spatial "
            f"mixer is {MIXER_DESCRIPTION[config.mixer]}."
        )
        has_original = True
        original_source = _ORIGINAL_SOURCE[model.kind]
    if model.params_m is None:
        params = "not stated in our sources"
    elif model.params_approx:
        params = f"about {model.params_m:g}M (original work)"
    else:
        params = f"{model.params_m:g}M"
    rows = [
        {
            "dataset": METRICS[key].dataset_name,
            "metric": METRICS[key].metric_name,
            "value": _format_value(value),
            "source": "original work (Han et al., ICLR 2022)",
        }
        for key, value in model.original_results.items()
    ]
    rows += [
        {
            "dataset": METRICS[result.metric].dataset_name,
            "metric": METRICS[result.metric].metric_name,
            "value": _format_value(result.value),
            "source": "measured on these weights" + (f": {result.notes}" if result.notes else ""),
        }
        for result in measured
    ]
    return {
        "title": model.title,
        "name": model.name,
        "kind": model.kind,
        "repo_id": repo_id,
        "summary": summary,
        "has_original": has_original,
        "original_source": original_source,
        "task_label": _TASK_LABEL[model.kind],
        "backbone": model.backbone,
        "mixer_label": _MIXER_LABEL[config.mixer],
        "mixer_description": MIXER_DESCRIPTION[config.mixer],
        "embed_dim": config.embed_dim,
        "depths": list(config.depths),
        "widths": list(config.hidden_sizes),
        "kernel_size": config.kernel_size,
        "mlp_ratio": f"{config.mlp_ratio:g}",
        "head": KIND_INFO[model.kind].head,
        "params": params,
        "gmacs": "not measured" if model.gmacs is None else f"{model.gmacs:g}G",
        "drop_path_rate": model.drop_path_rate,
        "training_data": _TRAINING_DATA[model.kind],
        "snippets": _snippets(model, repo_id),
        "results": rows,
        "paper_title": PAPER_TITLE,
        "paper_venue": PAPER_VENUE,
        "original_repo_url": ORIGINAL_REPO_URL,
        "bibtex": BIBTEX,
    }


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def build_model_card(
    name: str,
    *,
    repo_id: str | None = None,
    org: str = DEFAULT_ORG,
    measured: Mapping[str, list[MeasuredResult]] | None = None,
) -> ModelCard:
    """The card of released model `name` for the Hub repo `repo_id` (default `<org>/<name>`)."""
    if name not in RELEASED_MODELS:
        raise KeyError(f"No released model {name!r}. Available: {', '.join(RELEASED_MODELS)}.")
    model = RELEASED_MODELS[name]
    repo_id = repo_id or repo_id_for(name, org)
    model_measured = list((measured or {}).get(name, []))
    eval_results = _eval_results(model, model_measured)
    info = KIND_INFO[model.kind]
    card_data = ModelCardData(
        license=LICENSE,
        library_name="transformers",
        pipeline_tag=info.pipeline_tag,
        tags=list(info.tags),
        datasets=list(info.datasets),
        model_name=repo_id.split("/")[-1] if eval_results else None,
        eval_results=eval_results or None,
    )
    rendered = ModelCard.from_template(card_data, template_str=TEMPLATE, **_context(model, repo_id, model_measured))
    return ModelCard(_tidy(str(rendered)))


def render_model_card(name: str, **kwargs: Any) -> str:
    return str(build_model_card(name, **kwargs))


def write_model_cards(
    output_dir: str | Path,
    *,
    org: str = DEFAULT_ORG,
    measured: Mapping[str, list[MeasuredResult]] | None = None,
    names: Iterable[str] | None = None,
) -> list[Path]:
    """Write `<output_dir>/<name>/README.md` for every released model (or `names`); returns the paths."""
    paths = []
    for name in names or RELEASED_MODELS:
        path = Path(output_dir) / name / "README.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_model_card(name, org=org, measured=measured), encoding="utf-8", newline="\n")
        paths.append(path)
    return paths


def _matching_preset(config: Mapping[str, Any]) -> str | None:
    from ..models.dwnet import DWNET_PRESETS

    if not isinstance(config, Mapping) or config.get("model_type") != "dwnet":
        return None
    for name, preset in DWNET_PRESETS.items():
        if all(list(v) == list(config.get(k) or []) if isinstance(v, (list, tuple)) else config.get(k) == v
               for k, v in preset.items() if k != "drop_path_rate"):
            return name
    return None


def released_model_for_config(config: Mapping[str, Any]) -> str | None:
    """The released model whose card fits a saved `config.json` (architecture, size, mixer and class count), or
    None: a fine-tuned or backbone-only model gets no released model's card."""
    architectures = config.get("architectures") or []
    num_labels = len(config.get("id2label") or {})
    if "DWNetForImageClassification" in architectures and num_labels == 1000:
        preset = _matching_preset(config)
        return preset if preset in RELEASED_MODELS and RELEASED_MODELS[preset].kind == CLASSIFICATION else None
    backbone = _matching_preset(config.get("backbone_config") or {})
    if backbone is None:
        return None
    if config.get("model_type") == "upernet" and num_labels == 150:
        candidate = f"upernet-{backbone}"
    elif num_labels == 80 and (
        config.get("model_type") == "cascade_mask_rcnn" or any("cascade" in a.lower() for a in architectures)
    ):
        candidate = f"cascade-mask-rcnn-{backbone}"
    else:
        return None
    return candidate if candidate in RELEASED_MODELS else None


__all__ = [
    "DEFAULT_ORG",
    "RELEASED_MODELS",
    "MeasuredResult",
    "build_model_card",
    "default_measured_results_path",
    "load_measured_results",
    "released_model_for_config",
    "render_model_card",
    "repo_id_for",
    "write_model_cards",
]
