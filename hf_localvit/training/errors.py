"""Errors of the fine-tuning entry point: each says what was wrong and what to do about it."""

from __future__ import annotations


class FinetuneError(Exception):
    """A problem with the user's input (arguments, data, model, checkpoint); `finetune.py` prints it without a
    traceback and exits with status 2."""


class DataError(FinetuneError):
    """The dataset cannot be used as given (missing column, empty split, unreadable image, ...)."""


class BadImageError(DataError):
    """An image that cannot be decoded; the message names the split and row index."""


class CheckpointError(FinetuneError):
    """A checkpoint that is missing, incomplete or does not match the run being resumed."""
