"""Converters from the original DWNet checkpoints to transformers folders."""

from .key_mapping import ConversionError

__all__ = ["ConversionError"]
