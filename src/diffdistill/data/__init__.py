"""Raw sources -> uint8 tensors, and the in-memory artifact type shared by every layer.

The re-exports below load `bundle` (and torch) on first use, so the package's torch-free modules (`atomic`, which
lineage records use) import without it.
"""

from typing import Any

__all__ = ["TensorBundle", "from_signed", "to_signed", "to_unit"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from diffdistill.data import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module 'diffdistill.data' has no attribute {name!r}")
