"""The teacher and evaluate phases' parameters as typed dataclasses (`diffdistill.config`); YAML keys = field names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diffdistill.config import ConfigError, option
from diffdistill.data.external import ExternalSetConfig
from diffdistill.evaluation.protocols import PROTOCOL_NAMES, get_protocol


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
    archs: list[str] | None = None  # None: every `evaluate.archs`; a subset bounds a budget (conf/tour: ConvNet)


@dataclass
class ArchBudget:
    """`evaluate.arch_budget.<arch>`: a smaller budget for one slow architecture (on CPUs: ResNet-18 and ViT take
    ~6x ConvNet's time at 32 px). The papers train every architecture with every seed for the full epochs; a row
    measured under a budget carries its own epochs and seed count in the results."""

    seeds: list[int] | None = None  # None: `evaluate.seeds`
    epochs: int | None = option(None, min=1)  # None: the protocol's epochs
    common_only: bool = False  # true: scored under the common protocol only, not under the paper protocols


@dataclass
class ReportConfig:
    """What the report reads of `evaluate`: the architecture columns and the unseen ones it averages."""

    archs: list[str]
    unseen_archs: list[str]


@dataclass
class EvaluateConfig:
    """`evaluate`: every set × architecture × seed trained from scratch, final-epoch test accuracy.

    Every set is scored under the common `protocol` (one comparison over all sets) and under each protocol its
    method's paper evaluates with (`paper_protocols`: method, i.e. the set name without `_ipc<N>`, `full` for the
    full-data bound -> protocol name or list of names; the baselines list every paper protocol so that each
    comparison has them). `paper_protocol_overrides` (protocol name -> ProtocolConfig fields) size the paper
    protocols; `protocol_overrides` only the common one.
    """

    archs: list[str]
    unseen_archs: list[str]  # the headline "mean over unseen architectures"
    protocol: str = option(choices=PROTOCOL_NAMES)
    seeds: list[int]
    full_data: FullDataConfig
    protocol_overrides: dict[str, Any] = field(default_factory=dict)  # ProtocolConfig fields
    methods: list[str] = field(default_factory=list)  # read when the graph is built (namespaces)
    # sets made elsewhere, name -> file or folder; read when the graph is built (namespaces external_<name>_ipc<N>)
    external: dict[str, ExternalSetConfig] = field(default_factory=dict)
    paper_protocols: dict[str, str | list[str]] = field(default_factory=dict)
    paper_protocol_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    arch_budget: dict[str, ArchBudget] = field(default_factory=dict)  # distilled and baseline sets, not the bound

    def check(self, path: str) -> None:
        if not self.archs:
            raise ConfigError(f"{path}.archs is empty; list at least one architecture, e.g. [convnet]")
        stray_budget = [a for a in self.arch_budget if a not in self.archs]
        if stray_budget:
            raise ConfigError(f"{path}.arch_budget has {stray_budget}, which are not in {path}.archs {self.archs}")
        no_seeds = [a for a, b in self.arch_budget.items() if b.seeds is not None and not b.seeds]
        if no_seeds:
            raise ConfigError(f"{path}.arch_budget.{no_seeds[0]}.seeds is empty; give at least one seed or remove it")
        if not self.seeds or not self.full_data.seeds:
            raise ConfigError(f"{path}.seeds and {path}.full_data.seeds need at least one seed")
        stray_full = [a for a in self.full_data.archs or [] if a not in self.archs]
        if stray_full:
            raise ConfigError(f"{path}.full_data.archs has {stray_full}, which are not in {path}.archs {self.archs}")
        stray = [a for a in self.unseen_archs if a not in self.archs]
        if stray:
            raise ConfigError(f"{path}.unseen_archs has {stray}, which are not in {path}.archs {self.archs}")
        for method in self.paper_protocols:
            names = self.paper_protocols_of(method)
            for name in names:
                if name not in PROTOCOL_NAMES:
                    raise ConfigError(f"{path}.paper_protocols.{method} has {name!r}; valid protocols: "
                                      f"{', '.join(PROTOCOL_NAMES)}")
                if name == self.protocol:
                    raise ConfigError(f"{path}.paper_protocols.{method} lists {name!r}, the common protocol "
                                      f"({path}.protocol): every set is scored under it already; remove it")
            if len(set(names)) != len(names):
                raise ConfigError(f"{path}.paper_protocols.{method} lists a protocol twice: {names}")
        for name, overrides in self.paper_protocol_overrides.items():
            if name not in PROTOCOL_NAMES:
                raise ConfigError(f"{path}.paper_protocol_overrides has {name!r}, which is not a protocol; valid "
                                  f"protocols: {', '.join(PROTOCOL_NAMES)}")
            get_protocol(name, path=f"{path}.paper_protocol_overrides.{name}", **overrides)  # fields checked now

    def budget(self, arch: str) -> ArchBudget:
        return self.arch_budget.get(arch, ArchBudget())

    def paper_protocols_of(self, method: str) -> list[str]:
        """The protocols of `method`'s paper (none when the map has no entry for it)."""
        names = self.paper_protocols.get(method, [])
        return [names] if isinstance(names, str) else list(names)
