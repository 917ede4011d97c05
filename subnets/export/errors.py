"""Every exception the exporters raise, in one place.

Example:
    >>> from subnets.export.errors import ExportError, UnsupportedOpError
    >>> issubclass(ExportError, ValueError), issubclass(UnsupportedOpError, ValueError)
    (True, True)

References:
    David et al., TensorFlow Lite Micro (MLSys 2021).
"""

from __future__ import annotations


class ExportError(ValueError):
    """A model, level or artifact the exporter cannot write (the message names what and why)."""


class ConversionError(ValueError):
    """The TFLite converter could not express the network (an op it cannot lower)."""

    def __init__(self, message: str, ops: list[str]):
        self.ops = list(ops)
        super().__init__(message)


class MissingDependencyError(ImportError):
    """An optional export dependency (tensorflow, tflite-micro) is not installed."""


class UnsupportedOpError(ValueError):
    """The model uses an op that TFLite-Micro does not have."""

    def __init__(self, ops: list[str]):
        self.ops = list(ops)
        super().__init__(
            f"TFLite-Micro has no kernel for op(s) {', '.join(self.ops)}; the model would not "
            "run on a microcontroller. Rewrite the JAX code that produces them (e.g. avoid "
            "sort/top_k/scatter in apply) or pass check=False to keep the model for desktop "
            "TFLite only")


class ArenaError(RuntimeError):
    """The TFLite-Micro interpreter could not allocate or run the model in the given arena."""
