"""How transformers' UperNet heads compare with the original mmsegmentation 0.11 `UPerHead` / `FCNHead`.

Inference (eval mode): identical. Module by module, transformers' `UperNetHead` / `UperNetFCNHead` are the same
computation as mmseg's: mmcv `ConvModule` = conv without bias (`bias="auto"` with a norm) -> BatchNorm (eps 1e-5)
-> ReLU, in both; PPM = adaptive average pool -> ConvModule -> bilinear upsampling (`align_corners=False`); the
top-down FPN path adds the upsampled coarser lateral (mmseg in place, transformers out of place: same values);
all levels are upsampled to 1/4 resolution, concatenated, fused by a 3x3 ConvModule and classified by a 1x1 conv
with bias; the FCN auxiliary head reads stage 3 (mmseg `in_index=2`) with 3x3 ConvModules (padding 1).
`UperNetForSemanticSegmentation.forward` resizes the decode-head logits bilinearly to the input size, which is
mmseg's `EncoderDecoder.encode_decode`. The reference fixtures confirm this to about 1e-6.

Differences that only matter when training (they change outputs in train mode or the loss, not eval outputs):
1. Dropout: mmseg's `cls_seg` applies `Dropout2d(p=0.1)` to the classifier input of both heads
   (`dropout_ratio=0.1` in the original configs); transformers has none. `add_original_head_dropout` adds it back
   with forward pre-hooks, which keeps the checkpoint keys unchanged (hooks are not saved; call it after loading).
2. Loss normalisation: mmseg 0.11's cross-entropy averages over *all* pixels, ignored ones (label 255) counted as
   zero loss (`F.cross_entropy(reduction="none", ignore_index=255).mean()`); transformers' `CrossEntropyLoss(
   ignore_index=255)` averages over the non-ignored pixels only. With a fraction `f` of ignored pixels in a batch,
   mmseg's loss is `(1 - f)` times transformers'. Both weight the auxiliary loss by 0.4 and compute it on logits
   resized to the label size.
3. Initialisation of new heads: mmcv initialises ConvModule convs with Kaiming normal (fan_out, ReLU) and
   `conv_seg` with N(0, 0.01); transformers uses N(0, initializer_range=0.02) for every conv. Irrelevant when
   loading converted weights.
"""

from __future__ import annotations

from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers import UperNetForSemanticSegmentation

ORIGINAL_HEAD_DROPOUT = 0.1


def add_original_head_dropout(
    model: UperNetForSemanticSegmentation, p: float = ORIGINAL_HEAD_DROPOUT
) -> list[RemovableHandle]:
    """Apply `Dropout2d(p)` to the classifier input of the decode and auxiliary heads in train mode, as mmseg's
    `cls_seg` does. Eval outputs are unchanged. Returns the hook handles (`handle.remove()` undoes it)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"Dropout probability must be in [0, 1), got {p}.")

    def dropout_classifier_input(module: nn.Module, args: tuple) -> tuple:
        return (nn.functional.dropout2d(args[0], p=p, training=module.training), *args[1:])

    heads = [model.decode_head] + ([model.auxiliary_head] if model.auxiliary_head is not None else [])
    return [head.classifier.register_forward_pre_hook(dropout_classifier_input) for head in heads]


__all__ = ["ORIGINAL_HEAD_DROPOUT", "add_original_head_dropout"]
