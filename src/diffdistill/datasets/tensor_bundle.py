"""`TensorBundleDataset`: a `TensorBundle` as safetensors plus a JSON sidecar.

Built on kedro-datasets' `SafetensorsDataset` (torch backend) for paths, versioning and fsspec;
adds the sidecar (shapes, dtypes, metadata, sha256 of the tensor file), atomic saves, an
integrity check on load and kedro-viz previews.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import PurePosixPath
from typing import Any

from kedro.io.core import DatasetError, VersionNotFoundError, get_filepath_str
from kedro_datasets._typing import ImagePreview, TablePreview
from kedro_datasets_experimental.safetensors import SafetensorsDataset
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from diffdistill.data.bundle import TensorBundle
from diffdistill.data.grid import grid_png_bytes, set_grid
from diffdistill.datasets.atomic import write_bytes_atomic

FORMAT = "diffdistill.tensor_bundle/1"


def _is_sidecar(sidecar: Any) -> bool:
    """The sidecar's structure, checked before any field is read."""
    if not isinstance(sidecar, dict) or not isinstance(sidecar.get("meta", {}), dict):
        return False
    specs = sidecar.get("tensors", {})
    return isinstance(specs, dict) and all(isinstance(spec, dict) and isinstance(spec.get("shape"), list)
                                           for spec in specs.values())


class TensorBundleDataset(SafetensorsDataset):
    """Versioned `TensorBundle` on disk: `<name>.safetensors` + `<name>.safetensors.json`."""

    def __init__(self, *, filepath: str, version: Any = None, credentials: dict | None = None,
                 fs_args: dict | None = None, metadata: dict | None = None, optional: bool = False) -> None:
        """`optional: true` makes loading a never-saved artifact return None instead of failing
        (evaluation and reporting then skip that set and say so)."""
        super().__init__(filepath=filepath, backend="torch", version=version, credentials=credentials,
                         fs_args=fs_args, metadata=metadata)
        self._optional = optional

    @staticmethod
    def sidecar_path(path: str) -> str:
        return f"{path}.json"

    def save(self, data: TensorBundle) -> None:
        if not isinstance(data, TensorBundle):
            raise DatasetError(f"{self} saves a TensorBundle, got {type(data).__name__}")
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        tensors = {k: v.detach().cpu().contiguous() for k, v in data.tensors.items()}
        owners: dict[int, str] = {}
        for name, tensor in tensors.items():  # safetensors refuses tensors that share memory: store copies
            if tensor.numel() and tensor.untyped_storage().data_ptr() in owners:
                tensors[name] = tensor.clone()
            owners.setdefault(tensors[name].untyped_storage().data_ptr(), name)
        payload = save_safetensors(tensors)
        sidecar = {
            "format": FORMAT,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                        for k, v in tensors.items()},
            "meta": data.meta,
        }
        # Sidecar first, tensor file last: the version is visible only once both are complete.
        write_bytes_atomic(self._fs, self.sidecar_path(save_path),
                           json.dumps(sidecar, indent=2, sort_keys=True).encode())
        write_bytes_atomic(self._fs, save_path, payload)
        self._invalidate_cache()

    def load(self) -> TensorBundle | None:
        if self._optional and not self._has_version():
            return None
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        sidecar_path = self.sidecar_path(load_path)
        if not self._fs.exists(sidecar_path):
            raise DatasetError(f"{load_path}: its metadata sidecar {sidecar_path} is missing; "
                               "re-run the pipeline that produces it")
        with self._fs.open(sidecar_path, "rb") as handle:
            try:
                sidecar = json.loads(handle.read())
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{sidecar_path} is not valid JSON ({exc}); re-run the producing pipeline") from exc
        if not _is_sidecar(sidecar):
            raise DatasetError(f"{sidecar_path} is not a {FORMAT} sidecar (an object with sha256, tensors "
                               "{name: {shape, dtype}} and meta {...}); it was edited or belongs to another file. "
                               "Re-run the producing pipeline or pin another version with --load-versions")
        with self._fs.open(load_path, "rb") as handle:
            payload = handle.read()
        digest = hashlib.sha256(payload).hexdigest()
        if digest != sidecar.get("sha256"):
            raise DatasetError(f"{load_path}: sha256 {digest[:12]}… does not match its sidecar "
                               f"({str(sidecar.get('sha256'))[:12]}…); the file or the sidecar was modified "
                               "or truncated. Re-run the producing pipeline or pin another version with --load-versions")
        try:
            tensors = load_safetensors(payload)
        except Exception as exc:  # safetensors raises its own error types
            raise DatasetError(f"{load_path} is not a readable safetensors file: {exc}") from exc
        expected = sidecar.get("tensors", {})
        for name, spec in expected.items():
            if name not in tensors or list(tensors[name].shape) != spec["shape"]:
                raise DatasetError(f"{load_path}: tensor {name!r} does not match the shape recorded in its sidecar")
        return TensorBundle(tensors=tensors, meta=sidecar.get("meta", {}))

    def _has_version(self) -> bool:
        try:
            self.resolve_load_version()
        except VersionNotFoundError:
            return False
        return True

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "protocol": self._protocol, "version": self._version}

    def preview(self) -> TablePreview:
        """kedro-viz table: one row per tensor (name, shape, dtype)."""
        bundle = self.load()
        tensors = {} if bundle is None else bundle.tensors
        rows = [[k, str(list(v.shape)), str(v.dtype).replace("torch.", "")] for k, v in tensors.items()]
        return TablePreview({"index": list(range(len(rows))), "columns": ["tensor", "shape", "dtype"], "data": rows})


class ImageBundleDataset(TensorBundleDataset):
    """A `TensorBundleDataset` whose bundle holds `images` (and `labels`): kedro-viz shows a class-per-row grid,
    titled `title` (default: the file's name without suffix; distilled sets pass their set name).

    (kedro-viz picks the renderer from the `preview` return annotation, hence a class per preview kind.)
    """

    def __init__(self, *, title: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._title = title or PurePosixPath(str(self._filepath)).stem

    def preview(self) -> ImagePreview:
        bundle = self.load()
        if bundle is None or "images" not in bundle or bundle.images.ndim != 4:
            raise DatasetError(f"{self} has no N×C×H×W `images` tensor to preview")
        return ImagePreview(base64.b64encode(grid_png_bytes(set_grid(bundle, self._title))).decode())
