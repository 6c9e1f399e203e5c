"""Settings of the four D3HR phases as typed dataclasses, built from their YAML sections by `diffdistill.config`.

Field names are the YAML keys; a field without a default must be given (conf/base gives them all):

    build(LatentsConfig, params["latents"], "latents")                       # parameters_latents.yml
    build(GaussiansConfig, params["gaussians"], "gaussians")                 # parameters_gaussians.yml
    build(GroupSamplingConfig, params["d3hr"]["group_sampling"], "d3hr.group_sampling")  # parameters_d3hr.yml
    build(GenerationConfig, params["d3hr"]["generation"], "d3hr.generation")

Every error is a `ConfigError` naming the key path and what to change. IPC and the sampler (paper or
factorised) are not settings of a section: they name the distilled set (`ipcs`, `d3hr_factorised_ipc<N>`) and
are arguments of the sampling functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from diffdistill.config import ConfigError, build, option, to_dict

T = TypeVar("T")

PAPER_WEIGHTS = (1.0, 1.0, 0.5)  # lambda_mu, lambda_sigma, lambda_skew of the paper


@dataclass(frozen=True)
class LatentsConfig:
    """`latents`: VAE latents of the train split and their deterministic DDIM inversion to step k of N."""

    num_steps: int = option(min=1, help="N of the DDIM schedule (D3HR: 50)")
    invert_steps: int = option(help="k in 1..N: invert to timesteps[N - k] (D3HR: 31 of 50)")
    invert_guidance: float = option(help="classifier-free guidance while inverting (the D3HR reference: 4)")
    batch_size: int = option(min=1, help="images encoded and inverted at a time (never two classes)")
    round_trip_images: int = option(min=1, help="images of the invert -> sample -> decode PSNR check")
    seed: int = option(help="seed of the posterior samples (per class)")
    sample_posterior: bool = option(False, help="false: the latent mean (deterministic); true: a posterior sample")

    def check(self, path: str) -> None:
        if not 1 <= self.invert_steps <= self.num_steps:
            raise ConfigError(f"{path}.invert_steps={self.invert_steps} must be in 1..{path}.num_steps="
                              f"{self.num_steps}; lower invert_steps or raise num_steps")

    @property
    def start_step(self) -> int:
        """Index into the N-step schedule the inverted noise sits at (N - k)."""
        return self.num_steps - self.invert_steps


@dataclass(frozen=True)
class GaussiansConfig:
    """`gaussians`: per-class diagonal Gaussians of the inverted noise, streamed in float64."""

    batch_size: int = option(min=1, help="rows accumulated at a time (never two classes)")
    min_std: float | None = option(None, gt=0, help="null: a constant dimension is an error; else the std floor")


@dataclass(frozen=True)
class GroupSamplingConfig:
    """`d3hr.group_sampling`: the best of `m` candidate groups per class under the moment-matching loss.

    `weights` = (lambda_mu, lambda_sigma, lambda_skew), the paper's (1, 1, 0.5) = `PAPER_WEIGHTS`.
    `chunk_size` candidates are drawn and scored at a time (peak memory ~ 2 * chunk_size * ipc * D * 4
    bytes); it never changes the result. `seed` is the run's base seed; each class derives its own.
    """

    m: int = option(min=1, help="candidate groups per class (the paper's m)")
    weights: tuple[float, ...] = option(help="lambda_mu, lambda_sigma, lambda_skew")
    chunk_size: int = option(min=1, help="candidates scored at a time: bounds memory whatever m is")
    seed: int = option(help="base seed; every class derives its own")

    def check(self, path: str) -> None:
        if len(self.weights) != 3 or any(w < 0 for w in self.weights):
            raise ConfigError(f"{path}.weights={list(self.weights)} must be three non-negative numbers "
                              "(lambda_mu, lambda_sigma, lambda_skew), e.g. [1.0, 1.0, 0.5]")


@dataclass(frozen=True)
class GenerationConfig:
    """`d3hr.generation`: DDIM sampling of the kept noises back from the inversion step, and soft labels."""

    guidance: float = option(help="classifier-free guidance while sampling back")
    batch_size: int = option(min=1, help="noises sampled and decoded at a time (never two classes)")
    soft_labels: bool = option(False, help="true: store the teacher's softmax as soft labels")


def checked(cls: type[T], config: T | Mapping[str, Any], path: str) -> T:
    """`config` run through `build`'s checks: a mapping is built, an instance made directly (`Cls(...)`,
    which checks nothing) is checked field by field; anything else is refused naming `path`."""
    if isinstance(config, cls):
        return build(cls, to_dict(config), path)
    if not isinstance(config, Mapping):
        raise ConfigError(f"{path} must be a {cls.__name__} or a mapping of its settings, got "
                          f"{type(config).__name__}")
    return build(cls, config, path)


def section(params: Any, path: str, name: str) -> Any:
    """`params[name]` of the parameter mapping at `path` (None when absent: `build` then names every key)."""
    if not isinstance(params, Mapping):
        raise ConfigError(f"{path} must be a mapping of its settings, got {params!r}; fix conf/*/parameters*.yml")
    return params.get(name)
