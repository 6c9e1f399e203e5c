"""The teacher and evaluate phases' parameters as typed dataclasses (`diffdistill.config`); YAML keys = field names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diffdistill.config import ConfigError, option
from diffdistill.data.external import ExternalSetConfig
from diffdistill.evaluation.protocols import PROTOCOL_NAMES


@dataclass
class TeacherConfig:
    """`teacher`: one classifier on the real train split (soft labels, herding features, fidelity judge)."""

    arch: str
    protocol: str = option(choices=PROTOCOL_NAMES)
    seed: int
    protocol_overrides: dict[str, Any] = field(default_factory=dict)  # ProtocolConfig fields


@dataclass
class FullDataConfig:
    """`evaluate.full_data`: the upper bound, the same architectures trained on the whole real train split."""

    seeds: list[int]
    protocol_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReportConfig:
    """What the report reads of `evaluate`: the architecture columns and the unseen ones it averages."""

    archs: list[str]
    unseen_archs: list[str]


@dataclass
class EvaluateConfig:
    """`evaluate`: every set × architecture × seed trained from scratch, final-epoch test accuracy."""

    archs: list[str]
    unseen_archs: list[str]  # the headline "mean over unseen architectures"
    protocol: str = option(choices=PROTOCOL_NAMES)
    seeds: list[int]
    full_data: FullDataConfig
    protocol_overrides: dict[str, Any] = field(default_factory=dict)  # ProtocolConfig fields
    methods: list[str] = field(default_factory=list)  # read when the graph is built (namespaces)
    # sets made elsewhere, name -> file or folder; read when the graph is built (namespaces external_<name>_ipc<N>)
    external: dict[str, ExternalSetConfig] = field(default_factory=dict)

    def check(self, path: str) -> None:
        if not self.archs:
            raise ConfigError(f"{path}.archs is empty; list at least one architecture, e.g. [convnet]")
        if not self.seeds or not self.full_data.seeds:
            raise ConfigError(f"{path}.seeds and {path}.full_data.seeds need at least one seed")
        stray = [a for a in self.unseen_archs if a not in self.archs]
        if stray:
            raise ConfigError(f"{path}.unseen_archs has {stray}, which are not in {path}.archs {self.archs}")
