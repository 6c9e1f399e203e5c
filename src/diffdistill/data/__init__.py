"""Raw sources -> uint8 tensors, and the in-memory artifact type shared by every layer."""

from diffdistill.data.bundle import TensorBundle, from_signed, to_signed, to_unit

__all__ = ["TensorBundle", "from_signed", "to_signed", "to_unit"]
