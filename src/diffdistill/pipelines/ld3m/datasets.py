"""`OptionalJSONDataset`: an atomic, versioned JSON file that may not have been written yet."""

from __future__ import annotations

from typing import Any

from kedro.io.core import VersionNotFoundError

from diffdistill.datasets import AtomicJSONDataset


class OptionalJSONDataset(AtomicJSONDataset):
    """`optional: true` makes loading a never-saved version return None (as `TensorBundleDataset(optional=...)`),
    so a report over many sets can skip the ones whose pipeline has not run."""

    def __init__(self, *, optional: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._optional = optional

    def load(self) -> Any:
        if self._optional:
            try:
                self.resolve_load_version()
            except VersionNotFoundError:
                return None
        return super().load()
