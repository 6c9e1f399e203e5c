"""One resume mechanism and one place for content fingerprints (no Kedro).

A long computation (prior training, expert trajectories, an LD3M run, an evaluation grid, D3HR's per-class group
searches) keeps its progress in a `WorkDir` keyed by everything that determines its result, so a killed run that
is started again with the same inputs finds its finished units and continues; a finished run `clear()`s it.
Units are JSON values (`get_json` / `put_json`), tensors (`get_tensor` / `put_tensor`), tensor-dict states with
a JSON header (`save_state` / `load_state`, safetensors, refused when their compatibility key differs) and torch
states with optimiser dicts (`save_torch` / `load_torch`, `weights_only=True`). Every write is atomic
(`data.atomic`): a kill leaves the previous unit or the new one, never half of one.

Fingerprints: `fingerprint(value)` (sha256 of canonical JSON, 16 hex: work keys, parameters, metadata) and
`tensor_fingerprint(tensors)` (sha256 of names, optionally dtypes, and raw bytes: data splits, priors, bundles).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffdistill.data.atomic import write_atomic, write_json_atomic

if TYPE_CHECKING:  # torch is imported where tensors are handled: `fingerprint` alone (lineage records) stays light
    import torch

ROOT = Path("data") / "checkpoints"  # relative to the project (the Kedro run's working directory)


def fingerprint(value: Any) -> str:
    """sha256 (16 hex) of `value` as canonical JSON (sorted keys; non-JSON values by `str`)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tensor_fingerprint(tensors: Iterable[torch.Tensor | tuple[str, torch.Tensor]], *, dtypes: bool = False) -> str:
    """sha256 (16 hex) over tensors in the given order: for (name, tensor) pairs the name first, with
    `dtypes` the dtype's name, then the raw bytes (any dtype, bf16 included)."""
    import torch

    digest = hashlib.sha256()
    for item in tensors:
        name, tensor = item if isinstance(item, tuple) else (None, item)
        if name is not None:
            digest.update(name.encode())
        if dtypes:
            digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def module_fingerprint(module: torch.nn.Module) -> str:
    """The exact weights of a module (names, dtypes, bytes of its state dict): which prior made an artifact."""
    return tensor_fingerprint(sorted(module.state_dict().items()), dtypes=True)


def split_fingerprint(bundle: Any) -> str:
    """A real split's images and labels: which data an artifact was made from."""
    return tensor_fingerprint([bundle["images"], bundle["labels"]])


def bundle_fingerprint(bundle: Any) -> str:
    """Every tensor of a bundle, names included."""
    return tensor_fingerprint([(name, bundle[name]) for name in sorted(bundle.tensors)])


class CompatibilityError(ValueError):
    """A saved state was written with other settings; the message names them."""


class WorkDir:
    """Resumable units of one computation under `path` (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def keyed(cls, kind: str, *keys: Any, root: str | Path = ROOT) -> WorkDir:
        """`<root>/<kind>/<fingerprint(keys)>`: the same inputs find the same folder."""
        return cls(Path(root) / kind / fingerprint(list(keys)))

    def file(self, name: str) -> Path:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        return self.path / safe

    # JSON units
    def get_json(self, key: str) -> Any:
        path = self.file(f"{key}.json")
        return json.loads(path.read_text()) if path.is_file() else None

    def put_json(self, key: str, value: Any, **dumps: Any) -> Path:
        return write_json_atomic(self.file(f"{key}.json"), value, **({"sort_keys": True} | dumps))

    # tensor units
    def get_tensor(self, key: str) -> torch.Tensor | None:
        from safetensors.torch import load_file

        path = self.file(f"{key}.safetensors")
        return load_file(str(path))["tensor"] if path.is_file() else None

    def put_tensor(self, key: str, tensor: torch.Tensor) -> Path:
        from safetensors.torch import save_file

        return write_atomic(self.file(f"{key}.safetensors"),
                            lambda tmp: save_file({"tensor": tensor.detach().cpu().contiguous()}, str(tmp)))

    # tensor-dict states with a JSON header and a compatibility key
    def save_state(self, name: str, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> Path:
        """`<name>.safetensors` (tensors + `info` in its header) and a readable `<name>.json` beside it."""
        from safetensors.torch import save_file

        header = json.dumps(dict(info), sort_keys=True)
        path = write_atomic(self.file(f"{name}.safetensors"), lambda tmp: save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata={"info": header}))
        write_json_atomic(self.file(f"{name}.json"), dict(info), indent=2, sort_keys=True)
        return path

    def load_state(self, name: str, compatible: Mapping[str, Any] | None = None,
                   free: Iterable[str] = ()) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """(tensors, info) of a saved state, or None. With `compatible`, its `info["config"]` must equal it in
        every key but `free` (settings a run may continue with, e.g. more iterations): else CompatibilityError."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = self.file(f"{name}.safetensors")
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as handle:
            info = json.loads(handle.metadata()["info"])
        if compatible is not None:
            saved, free = info.get("config", {}), set(free)
            changed = sorted(k for k in set(compatible) | set(saved) if k not in free
                             and saved.get(k) != compatible.get(k))
            if changed:
                raise CompatibilityError(f"{self.path} holds a run with different settings for {changed}; use a "
                                         "fresh work directory or the saved settings")
        return load_file(str(path)), info

    # torch states (optimiser state dicts, generator states)
    def load_torch(self, name: str) -> dict[str, Any] | None:
        import torch

        path = self.file(f"{name}.pt")
        return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None

    def save_torch(self, name: str, state: Mapping[str, Any]) -> Path:
        import torch

        return write_atomic(self.file(f"{name}.pt"), lambda tmp: torch.save(dict(state), tmp))

    def clear(self) -> None:
        """The computation finished (its artifacts hold everything): remove its units."""
        shutil.rmtree(self.path, ignore_errors=True)
