"""Versioned Kedro datasets for diffdistill artifacts (atomic writes, sidecar metadata, previews)."""

from diffdistill.datasets.atomic import AtomicCSVDataset, AtomicJSONDataset, AtomicTextDataset
from diffdistill.datasets.diffusers_folder import DiffusersFolderDataset
from diffdistill.datasets.image_grid import ImageGridDataset
from diffdistill.datasets.lineage_costs import LineageCostDataset
from diffdistill.datasets.tensor_bundle import ImageBundleDataset, TensorBundleDataset

__all__ = ["AtomicCSVDataset", "AtomicJSONDataset", "AtomicTextDataset", "DiffusersFolderDataset", "ImageBundleDataset", "ImageGridDataset", "LineageCostDataset",
           "TensorBundleDataset"]
