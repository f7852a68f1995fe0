"""Format knowledge shared by the server, ngstate and the annotation writer."""

from .formats import format_from_names

__all__ = ["format_from_names"]
