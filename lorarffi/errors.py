"""The one family of errors lora-rffi raises on bad input or configuration.

The CLI turns any :class:`LoraRffiError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

__all__ = ["LoraRffiError", "ConfigError", "InputDataError", "CaptureError", "ModelError"]


class LoraRffiError(Exception):
    """Base class of every error that is the user's input, not a bug."""


class ConfigError(LoraRffiError, ValueError):
    """A parameter has a value outside what is valid; the message names it, its value and the valid range."""


class InputDataError(LoraRffiError):
    """A file, stream or message cannot be read; the message is ``"{source}: {problem}"``."""

    def __init__(self, source: object, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class CaptureError(LoraRffiError):
    """A radio or stream source failed in a way retrying cannot fix."""


class ModelError(LoraRffiError):
    """A model directory or checkpoint is missing, inconsistent or incompatible."""
