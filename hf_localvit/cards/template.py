"""The one template of every released model's card (Jinja, rendered by `huggingface_hub.ModelCard.from_template`).

Kept as a Python string so the card generator works from an installed package as well as from a checkout.
Runs of blank lines left by the template's conditionals are collapsed after rendering.
"""

TEMPLATE = r"""---
{{ card_data }}
---

# {{ title }}

{{ summary }}

This repository holds a port to Hugging Face `transformers` made with hf-localvit: the architecture{% if has_original %} and the
original weights come{% else %} comes{% endif %} from the paper *{{ paper_title }}* (Han et al., {{ paper_venue }});
the original code and checkpoints are at [Atten4Vis/DemystifyLocalViT]({{ original_repo_url }}).
{% if has_original %}
The weights were converted from {{ original_source }} with hf-localvit's converter, which maps every key
strictly and is tested against the outputs of the original implementation.
{% else %}
**No checkpoint of this variant was released by the original authors, and our sources give no result for it.**
Weights published under this name are therefore not the original authors': the results below list only what was
measured on them{% if not results %} (nothing yet){% endif %}.
{% endif %}

## Model details

| | |
| --- | --- |
| Task | {{ task_label }} |
| Backbone | DWNet, {{ mixer_label }} mixer (`{{ backbone }}`): embedding dim {{ embed_dim }}, depths {{ depths }}, stage widths {{ widths }}, {{ kernel_size }}x{{ kernel_size }} depth-wise kernels, MLP ratio {{ mlp_ratio }} |
| Head | {{ head }} |
| Parameters | {{ params }} |
{% if kind == "classification" %}| Multiply-accumulates (224x224) | {{ gmacs }} |
| Input resolution | 224x224 (any size is accepted) |
{% endif %}| Original code | [Atten4Vis/DemystifyLocalViT]({{ original_repo_url }}) (MIT) |
| Paper | {{ paper_title }} ({{ paper_venue }}) |

DWNet keeps the hierarchy of the Swin Transformer -- a 4x4 patch embedding, four stages joined by patch merging,
blocks made of a spatial mixer and an MLP, each with a residual connection -- and replaces each block's local window
attention with {{ mixer_description }}. The paper relates local attention and dynamic depth-wise convolution
through three properties -- sparse connectivity, weight sharing and dynamic weights -- and compares them
empirically.
{% if kind == "classification" %}Parameter and multiply-accumulate counts (the paper's "FLOPs") are measured on this
port's models with 1000 classes.{% endif %}

## Intended uses

{% if kind == "classification" %}- Classifying natural images into the 1000 ImageNet-1K classes.
- A pretrained backbone for fine-tuning on other classification datasets (`finetune.py` in hf-localvit), or for
  detection and segmentation heads (`DWNetBackbone` / `AutoBackbone`).
{% elif kind == "segmentation" %}- Semantic segmentation of scenes into the 150 ADE20K classes.
- A starting point for fine-tuning UperNet on other semantic segmentation datasets.
{% else %}- Detecting and segmenting instances of the 80 COCO classes (boxes, labels, scores and masks).
- A starting point for fine-tuning on other detection or instance segmentation datasets.
{% endif %}- Research on the connection between local attention and dynamic depth-wise convolution.

## How to use

{% for snippet in snippets %}{{ snippet.intro }}

```python
{{ snippet.code }}
```

{% endfor %}{% if kind == "classification" %}With the `hf_localvit` package installed, `import hf_localvit` registers DWNet with the `transformers` Auto
classes and `trust_remote_code=True` is not needed; without it, `trust_remote_code=True` runs the model code stored
in this repository (`modeling_dwnet.py`, `configuration_dwnet.py`, `ops_dwnet.py`): read it first.
{% elif kind == "segmentation" %}`UperNetForSemanticSegmentation` is part of `transformers`; the DWNet backbone and the
image processor class are registered with the `transformers` Auto classes by `import hf_localvit` (the hf-localvit
package), which these snippets need.
{% else %}The Cascade Mask R-CNN model, its image processor and the DWNet backbone are registered with the
`transformers` Auto classes by `import hf_localvit` (the hf-localvit package), which these snippets need.
`post_process_object_detection` gives boxes only; `post_process_instance_segmentation` adds the masks.
{% endif %}

## Preprocessing

{% if kind == "classification" %}The image processor saved with the model (`preprocessor_config.json`) applies the
original evaluation transform: shorter side resized to 256 (bicubic), centre crop 224x224, rescale to [0, 1], and
normalisation with the ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
`AutoImageProcessor.from_pretrained(..., backend="pil")` resizes with PIL exactly like the original; the default
torchvision backend differs by at most about one grey level on a few pixels.
{% elif kind == "segmentation" %}The image processor saved with the model (`preprocessor_config.json`) applies the
original ADE20K test pipeline: the image is resized, keeping its aspect ratio, to the largest size that fits
2048x512 (long side at most 2048, short side at most 512), rescaled to [0, 1] and normalised with the ImageNet mean
(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); inference runs on the whole image, and
`post_process_semantic_segmentation` resizes the logits back to the input size.
{% else %}Use the image processor saved with the model (`preprocessor_config.json`): it resizes and normalises the
image for the model and turns its outputs into boxes, scores, labels and masks in the input image's coordinates.
{% endif %}

## Training data and recipe (original work)

{% if kind == "classification" %}Trained by the original authors on ImageNet-1K (about 1.28 million training images,
1000 classes) at 224x224 for 300 epochs with AdamW, following the Swin Transformer recipe with the timm-based
trainer of the original repository, stochastic depth (drop path) {{ drop_path_rate }}. Evaluation: shorter side 256
(bicubic), centre crop 224, ImageNet mean/std, on the ImageNet-1K validation set.
{% elif kind == "segmentation" %}Trained by the original authors on ADE20K (150 classes) with mmsegmentation 0.x:
UperNet on the ImageNet-1K-pretrained DWNet backbone, 160k iterations on 512x512 crops. mIoU is single-scale, on the
ADE20K validation set.
{% else %}Trained by the original authors on COCO 2017 with mmdetection 2.11: Cascade Mask R-CNN with FPN on the
ImageNet-1K-pretrained DWNet backbone, 3x schedule with multi-scale training. Box and mask AP are on COCO 2017
validation.
{% endif %}

## Evaluation results

{% if results %}| Dataset | Metric | Value | Source |
| --- | --- | ---: | --- |
{% for row in results %}| {{ row.dataset }} | {{ row.metric }} | {{ row.value }} | {{ row.source }} |
{% endfor %}
Results marked "original work" are the paper's and were not re-measured here unless a "measured" row says so.
{% else %}No result to report: the original work released no checkpoint of this variant, our sources give
no number for it, and nothing has been measured on these weights yet.
{% endif %}
## Limitations

- The model reflects its training data ({{ training_data }}): its classes, image statistics and biases. It was not
  evaluated for robustness, fairness or out-of-distribution inputs, and should not be used for decisions about
  people.
{% if kind == "classification" %}- Accuracy was reported at 224x224; other resolutions work but were not evaluated.
{% endif %}- The spatial mixers are implemented in plain PyTorch (no custom CUDA kernels), so speed and memory differ
  from the original implementation.
{% if has_original %}- Numerical differences to the original implementation come from float arithmetic and
  image resizing details, not from the weights.
{% endif %}

## Licence

The original DWNet code and checkpoints are released under the MIT licence by their authors
([Atten4Vis/DemystifyLocalViT]({{ original_repo_url }})); this port and these weights are distributed under the
same licence.

## Citation

```bibtex
{{ bibtex }}
```
"""
