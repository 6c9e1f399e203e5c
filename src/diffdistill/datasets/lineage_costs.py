"""What every distilled set cost to make, read from the project's lineage records (a read-only dataset).

The report takes it as an input, so the cost columns sit beside the accuracies and kedro-viz shows where they come
from. The records are written while a run goes (every save and every finished node), so a run that distils and
reports in one go sees the costs of what it just made.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from diffdistill.lineage import distilled_set_costs, read_records


class LineageCostDataset(AbstractDataset[None, dict[str, dict[str, Any]]]):
    """`load()`: set name -> `diffdistill.lineage.artifact_cost` of its latest `<set>.distilled_set` version.
    `filepath`: the lineage folder (`data/lineage`); a missing folder loads as no costs."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> dict[str, dict[str, Any]]:
        return distilled_set_costs(read_records(self._filepath))

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._filepath} is written by the lineage hook; this dataset only reads it")

    def _exists(self) -> bool:
        return True  # no records is a valid answer (no costs yet)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
