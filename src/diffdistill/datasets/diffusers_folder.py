"""`DiffusersFolderDataset`: an object saved with `save_pretrained` and loaded with `from_pretrained`.

Used for the generative prior (a folder of diffusers components plus our adapter config). Local
filesystem only: the folder is written under a hidden name and renamed into place, so a killed
run never leaves a half-written version.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from kedro.io.core import AbstractVersionedDataset, DatasetError, Version, get_protocol_and_path
from kedro_datasets._typing import JSONPreview

from diffdistill.datasets.atomic import commit_local_dir, temporary_sibling


def import_object(path: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise DatasetError(f"model_class {path!r} must be a dotted path like 'package.module.Class'")
    return getattr(importlib.import_module(module_name), attr)


class DiffusersFolderDataset(AbstractVersionedDataset[Any, Any]):
    """A versioned `save_pretrained` folder. `model_class` names the class whose `from_pretrained` loads it."""

    def __init__(self, *, filepath: str, model_class: str = "diffdistill.prior.LatentPrior",
                 load_args: dict | None = None, version: Version | None = None,
                 metadata: dict | None = None) -> None:
        self._model_class = model_class
        self._load_args = dict(load_args or {})
        self.metadata = metadata
        protocol, path = get_protocol_and_path(filepath, version)
        if protocol != "file":
            raise DatasetError(f"DiffusersFolderDataset supports local folders only, got {filepath!r}")
        self._fs = fsspec.filesystem("file")
        super().__init__(filepath=PurePosixPath(path), version=version,
                         exists_function=self._fs.exists, glob_function=self._fs.glob)

    def load(self) -> Any:
        path = Path(str(self._get_load_path()))
        if not path.is_dir():
            raise DatasetError(f"{path} is not a model folder; run the pipeline that produces it first")
        return import_object(self._model_class).from_pretrained(str(path), **self._load_args)

    def save(self, data: Any) -> None:
        if not hasattr(data, "save_pretrained"):
            raise DatasetError(f"{self} saves objects with save_pretrained(), got {type(data).__name__}")
        final = Path(str(self._get_save_path()))
        tmp = Path(temporary_sibling(str(final)))
        try:
            data.save_pretrained(str(tmp))
            commit_local_dir(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _exists(self) -> bool:
        try:
            return Path(str(self._get_load_path())).is_dir()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "model_class": self._model_class, "version": self._version}

    def preview(self) -> JSONPreview:
        path = Path(str(self._get_load_path()))
        listing = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
        return JSONPreview("\n".join(listing))
