"""`ImageGridDataset`: a PNG picture (kedro-datasets' pillow ImageDataset, saved atomically; `latest: <path>`
also writes each save to a fixed path, see `datasets.atomic`)."""

from __future__ import annotations

import base64
import io
from typing import Any

import torch
from kedro.io.core import DatasetError, get_filepath_str
from kedro_datasets._typing import ImagePreview
from kedro_datasets.pillow import ImageDataset
from PIL import Image

from diffdistill.data.grid import grid_png_bytes
from diffdistill.data.images import DECODE_ERRORS, describe_error
from diffdistill.datasets.atomic import LatestCopy


class ImageGridDataset(LatestCopy, ImageDataset):
    """Saves a uint8 (3, H, W) tensor or a PIL image as PNG; loads a PIL image."""

    def __init__(self, *, latest: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keep_latest_at(latest)

    def save(self, data: Any) -> None:
        if isinstance(data, torch.Tensor):
            payload = grid_png_bytes(data.to(torch.uint8))
        elif isinstance(data, Image.Image):
            buf = io.BytesIO()
            data.save(buf, format="PNG")
            payload = buf.getvalue()
        else:
            raise TypeError(f"{self} saves a uint8 tensor or a PIL image, got {type(data).__name__}")
        self.save_payload(payload)

    def load(self) -> Image.Image:
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        with self._fs.open(load_path, "rb") as handle:
            payload = handle.read()
        try:
            with Image.open(io.BytesIO(payload)) as img:
                img.load()  # decode now: a truncated file fails here, not in a later consumer
                return img.copy()
        except DECODE_ERRORS as exc:
            raise DatasetError(f"{load_path} is not a readable image ({describe_error(exc)}); re-run the pipeline "
                               "that produces it, or pin another version with --load-versions") from exc

    def preview(self) -> ImagePreview:
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        with self._fs.open(load_path, "rb") as handle:
            return ImagePreview(base64.b64encode(handle.read()).decode())
