"""Published accuracies the results tables put beside ours (`results collect` fills the CSV's `published` column).

Each value is keyed by what makes it comparable: dataset, set (as the pipelines name it), IPC (None: the
full-data bound), architecture and the protocol that reproduces the paper's evaluation
(`diffdistill.evaluation.protocols`). A value under another protocol would be a different experiment, so rows
measured under any other protocol get no published value.

DC (Zhao et al., ICLR 2021) Table 1, ConvNet-3 at 32 px: its random / herding / full rows and its own DC sets are
scored by DC's `evaluate_synset` without augmentation on CIFAR-10 and Fashion-MNIST (DC-augment is MNIST-only),
300 epochs: our `dc_reference_no_augment`. DSA (ICML 2021), DM (WACV 2023) and MTT (CVPR 2022) score with DSA
augmentation, 1000 epochs, MTT at its learned syn_lr: our `dc_reference`. Our pixel-space twins of the LD3M runs
are those methods: `ld3m_dc_pixel` matches gradients under DSA (DSA), `ld3m_dm_pixel` is DM, `ld3m_mtt_pixel` MTT.
"""

from __future__ import annotations

DC_NO_AUGMENT = "dc_reference_no_augment"
DSA_PROTOCOL = "dc_reference"

# (set, protocol) -> {dataset: (IPC 1, IPC 10, IPC 50) mean ± std in %, or (None,) * 3 for the full-data bound}
_TABLES: dict[tuple[str, str], dict[str, dict[int | None, tuple[float, float]]]] = {
    ("random", DC_NO_AUGMENT): {
        "cifar10": {1: (14.4, 2.0), 10: (26.0, 1.2), 50: (43.4, 1.0)},
        "fashion_mnist": {1: (51.4, 3.8), 10: (73.8, 0.7), 50: (82.5, 0.7)},
    },
    ("herding", DC_NO_AUGMENT): {
        "cifar10": {1: (21.5, 1.2), 10: (31.6, 0.7), 50: (40.4, 0.6)},
        "fashion_mnist": {1: (67.0, 1.9), 10: (71.1, 0.7), 50: (71.9, 0.8)},
    },
    ("full", DC_NO_AUGMENT): {
        "cifar10": {None: (84.8, 0.1)},
        "fashion_mnist": {None: (93.5, 0.1)},
    },
    ("ld3m_dc_pixel", DSA_PROTOCOL): {  # DSA
        "cifar10": {1: (28.8, 0.7), 10: (52.1, 0.5), 50: (60.6, 0.5)},
        "fashion_mnist": {1: (70.6, 0.6), 10: (84.6, 0.3), 50: (88.7, 0.2)},
    },
    ("ld3m_dm_pixel", DSA_PROTOCOL): {  # DM
        "cifar10": {1: (26.0, 0.8), 10: (48.9, 0.6), 50: (63.0, 0.4)},
    },
    ("ld3m_mtt_pixel", DSA_PROTOCOL): {  # MTT
        "cifar10": {1: (46.3, 0.8), 10: (65.3, 0.7), 50: (71.6, 0.2)},
    },
}


def published_values(dataset: str) -> dict[tuple[str, int | None, str, str], tuple[float, float]]:
    """(set, ipc, arch, protocol) -> published (mean, std) in % for `dataset` (empty for datasets no paper
    reports, e.g. scikit-learn's digits). Every value here is ConvNet-3's."""
    out = {}
    for (set_name, protocol), by_dataset in _TABLES.items():
        for ipc, value in by_dataset.get(dataset, {}).items():
            out[(set_name, ipc, "convnet", protocol)] = value
    return out


def published_means(dataset: str) -> dict[tuple[str, int | None, str, str], float]:
    """`published_values` without the std: the CSV's `published` column."""
    return {key: mean for key, (mean, _) in published_values(dataset).items()}
