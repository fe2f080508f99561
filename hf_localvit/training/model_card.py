"""The model card (README.md) written next to a fine-tuned model: training data, hyper-parameters, final metrics."""

from __future__ import annotations

from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .tasks.base import DatasetInfo

_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ summary }}

## Training data

{{ data_section }}

## Training hyper-parameters

{{ hyperparameter_table }}

## Results

{{ metrics_table }}

{{ per_class_section }}

{{ history_section }}

## How to use

```python
import hf_localvit  # registers DWNet with the transformers Auto classes
from transformers import pipeline

classifier = pipeline("{{ pipeline_task }}", model="{{ model_ref }}")
print(classifier("image.jpg"))
```

{% if remote_code %}Without `hf_localvit` installed, pass `trust_remote_code=True` to load the model code saved with it.
{% else %}Loading needs `hf_localvit` installed and imported: it registers the DWNet backbone with transformers.
{% endif %}"""


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format(item) for item in value)
    return str(value)


def _table(rows: dict[str, Any], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {name} | {_format(value)} |" for name, value in rows.items()]
    return "\n".join(lines)


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _per_class_section(metrics: dict[str, Any], names: list[str] | None) -> str:
    """A table of the metrics that hold one value per class (e.g. per-category IoU), or nothing."""
    columns = {
        name.removeprefix("eval_"): value
        for name, value in metrics.items()
        if names and _is_list(value) and len(value) == len(names)
    }
    if not columns:
        return ""
    lines = ["### Per class", "", "| class | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for index, name in enumerate(names):
        cells = ["n/a" if values[index] is None else _format(values[index]) for values in columns.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_model_card(
    *,
    model_name: str,
    task_name: str,
    pipeline_task: str,
    tags: list[str],
    base_model: str | None,
    model_description: str,
    dataset: DatasetInfo,
    hyperparameters: dict[str, Any],
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    primary_metric: str,
    repo_id: str | None = None,
    remote_code: bool = True,
) -> ModelCard:
    eval_results = [
        EvalResult(
            task_type=task_name,
            dataset_type=dataset.kind,
            dataset_name=dataset.name,
            dataset_split=dataset.validation_split,
            metric_type=name.removeprefix("eval_"),
            metric_value=value,
        )
        for name, value in metrics.items()
        if name.startswith("eval_")
        and (name.endswith("accuracy") or name == f"eval_{primary_metric}")
        and isinstance(value, float)
    ]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=pipeline_task,
        tags=["dwnet", "hf-localvit", *tags],
        base_model=base_model,
        datasets=[dataset.hub_id] if dataset.hub_id else None,
        metrics=[primary_metric],
        model_name=model_name,
        eval_results=eval_results or None,
    )
    details = dict(dataset.details)
    names = details.pop("label names", None)
    data_lines = [
        f"- Dataset: {dataset.name}",
        f"- Training split: '{dataset.train_split}' ({dataset.train_rows} examples)",
        f"- Validation: {dataset.validation} ({dataset.validation_rows} examples)",
    ]
    data_lines += [f"- {key.capitalize()}: {_format(value)}" for key, value in details.items()]
    if names:
        shown = ", ".join(names[:50]) + (f", ... ({len(names)} in all)" if len(names) > 50 else "")
        data_lines.append(f"- Labels: {shown}")
    shown_metrics = {name: value for name, value in metrics.items() if isinstance(value, (int, float, str))}
    history_section = ""
    if len(history) > 1:
        keys = [key for key, value in history[-1].items() if key not in ("step", "epoch") and not _is_list(value)]
        lines = ["### Evaluations during training", "", "| step | epoch | " + " | ".join(keys) + " |"]
        lines.append("|---" * (len(keys) + 2) + "|")
        for row in history:
            lines.append(
                f"| {row['step']} | {row['epoch']:.2f} | " + " | ".join(_format(row.get(k, "")) for k in keys) + " |"
            )
        history_section = "\n".join(lines)
    base = f" from [{base_model}](https://huggingface.co/{base_model})" if base_model else ""
    return ModelCard.from_template(
        card_data,
        template_str=_TEMPLATE,
        model_name=model_name,
        summary=f"{model_description}, fine-tuned{base} for {task_name} with `finetune.py` (hf-localvit, "
        "Hugging Face Accelerate).",
        data_section="\n".join(data_lines),
        hyperparameter_table=_table(
            {name: value for name, value in hyperparameters.items() if value is not None}, ("hyper-parameter", "value")
        ),
        metrics_table=_table(shown_metrics, ("metric", "value")),
        per_class_section=_per_class_section(metrics, names),
        history_section=history_section,
        pipeline_task=pipeline_task,
        model_ref=repo_id or "path/to/this/folder",
        remote_code=remote_code,
    )
