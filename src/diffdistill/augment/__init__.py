"""Differentiable augmentation shared by distillation and evaluation: DSA, and the soft-label crop/flip + CutMix."""

from diffdistill.augment.dsa import DEFAULT_STRATEGY, DSA, FAMILIES, DSAParams, dsa_strategy_for, resolve_dsa_strategy
from diffdistill.augment.mixing import cutmix, random_resized_crop_flip

__all__ = [
    "DEFAULT_STRATEGY",
    "DSA",
    "FAMILIES",
    "DSAParams",
    "cutmix",
    "dsa_strategy_for",
    "random_resized_crop_flip",
    "resolve_dsa_strategy",
]
