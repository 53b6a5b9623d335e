"""The run lifecycle library: :class:`RunManager` is its entry point."""

from .manager import RunManager

__all__ = ["RunManager"]
