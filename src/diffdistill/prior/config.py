"""Every knob of the prior phase, as typed dataclasses (`diffdistill.config`): the autoencoder and denoiser shapes,
the noise schedule and both training loops. YAML keys (`prior.train.*`) equal the field names."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from diffdistill.config import ConfigError, build, option

MODES = ("train", "fine_tune")
SOURCES = ("train", "train_denoiser", "fine_tune", "dit_folder", "components")


@dataclass
class AutoencoderConfig:
    """AutoencoderKL shape: len(block_out_channels) - 1 halvings (16 px -> 4×4 with three blocks)."""

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = option(1, min=1)
    norm_num_groups: int = option(16, min=1)
    latent_channels: int = option(4, min=1)
    mid_block_attention: bool = False

    def check(self, path: str) -> None:
        if not self.block_out_channels or min(self.block_out_channels) < 1:
            raise ConfigError(f"{path}.block_out_channels={list(self.block_out_channels)} must be a non-empty list "
                              "of positive ints, like [32, 64, 64]")


@dataclass
class DenoiserConfig:
    """Class-conditional UNet2DModel over the latent grid (condition width = 4 × first block)."""

    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = option(1, min=1)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "UpBlock2D")
    attention_head_dim: int = option(32, min=1)
    norm_num_groups: int = option(32, min=1)

    def check(self, path: str) -> None:
        AutoencoderConfig.check(self, path)  # the same rule for block_out_channels
        if not len(self.down_block_types) == len(self.up_block_types) == len(self.block_out_channels):
            raise ConfigError(f"{path}: down_block_types, up_block_types and block_out_channels must have equal "
                              "length")


@dataclass
class NoiseScheduleConfig:
    num_train_timesteps: int = option(1000, min=1)
    beta_start: float = option(1e-4, gt=0)
    beta_end: float = option(0.02, gt=0, lt=1)
    beta_schedule: str = "linear"
    timestep_spacing: str = "leading"


@dataclass
class OptimiserConfig:
    """AdamW with gradient clipping, the same knobs for both training loops of the prior."""

    lr: float = option(2e-3, gt=0)
    weight_decay: float = option(0.01, min=0)
    grad_clip: float = option(1.0, gt=0)
    max_seconds: float | None = option(None, gt=0)  # optional wall-clock cap (breaks byte-reproducibility when hit)


@dataclass
class AutoencoderTrainConfig(OptimiserConfig):
    steps: int = option(300, min=0)
    batch_size: int = option(64, min=1)
    l1_weight: float = option(0.5, min=0)
    kl_weight: float = option(1e-4, min=0)  # times the KL per latent dimension


@dataclass
class DenoiserTrainConfig(OptimiserConfig):
    steps: int = option(750, min=0)
    batch_size: int = option(256, min=1)
    warmup_steps: int = option(0, min=0)
    lr_schedule: str = option("constant", choices=("constant", "cosine"))  # cosine decays to 0 at `steps`
    label_dropout: float = option(0.1, min=0, lt=1)  # 0.1 keeps guidance usable
    ema_decay: float = option(0.995, min=0, lt=1)


@dataclass
class PriorTrainConfig:
    """Every knob of the prior phase. `mode="fine_tune"` continues training a loaded prior's denoiser."""

    mode: str = option("train", choices=MODES)
    seed: int = 0
    device: str = "cpu"
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    schedule: NoiseScheduleConfig = field(default_factory=NoiseScheduleConfig)
    autoencoder_train: AutoencoderTrainConfig = field(default_factory=AutoencoderTrainConfig)
    denoiser_train: DenoiserTrainConfig = field(default_factory=DenoiserTrainConfig)
    center_latents: bool = True  # shift latents by their mean before scaling by 1/std
    default_guidance: float = 3.0  # CFG scale recorded with the prior (class fidelity >= 80 % on digits)
    checkpoint_every: int = option(100, min=1)
    log_every: int = option(10, min=1)

    @classmethod
    def from_dict(cls, values: dict[str, Any], path: str = "prior.train") -> PriorTrainConfig:
        """Build from nested plain dicts (Kedro parameters `prior.train`); every key and value checked."""
        return build(cls, values, path)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ComponentsConfig:
    """`prior.components`: local folders of a VAE and a denoiser (and optionally a scheduler)."""

    vae: str | None = None
    denoiser: str | None = None
    scheduler: str | None = None


@dataclass
class QualityConfig:
    """`prior.quality`: reconstruction PSNR on test images and class fidelity of generated samples."""

    max_test_images: int = option(min=1)
    samples_per_class: int = option(min=1)
    num_steps: int = option(min=1)
    seed: int
    guidance: float | None = None  # None: the prior's recorded default guidance


@dataclass
class PriorConfig:
    """`prior`: where the prior comes from (`source`), how it is trained (`train`) and judged (`quality`)."""

    source: str = option(choices=SOURCES)
    # train_denoiser: the side the frozen VAE runs at (data resized to it and back); None = the data's own
    native_size: int | None = option(None, min=1)
    dit_folder: str | None = None
    components: ComponentsConfig = field(default_factory=ComponentsConfig)
    imagenet_subset: str | None = None  # maps a 10-class ImageNet subset's labels to the prior's class ids
    class_ids: list[int] | None = None  # or an explicit label -> prior class id list
    train: dict[str, Any] = field(default_factory=dict)  # PriorTrainConfig fields (built with the mode)
    quality: QualityConfig | None = None  # read by the prior-quality node (score_prior)

    def check(self, path: str) -> None:
        if self.source == "dit_folder" and not self.dit_folder:
            raise ConfigError(f"{path}.source is dit_folder but {path}.dit_folder is not set; give the folder")
        if self.source == "components" and not (self.components.vae and self.components.denoiser):
            raise ConfigError(f"{path}.source is components: set {path}.components.vae and "
                              f"{path}.components.denoiser to local folders")
        if self.source == "train_denoiser" and not self.components.vae:
            raise ConfigError(f"{path}.source is train_denoiser: set {path}.components.vae to a local VAE folder "
                              "(frozen; only the denoiser is trained here)")
        if self.native_size is not None and self.source != "train_denoiser":
            raise ConfigError(f"{path}.native_size applies to source train_denoiser only (a pretrained prior runs "
                              "at its own size); remove it")
        if self.source == "fine_tune" and not (self.dit_folder or (self.components.vae and self.components.denoiser)):
            raise ConfigError(f"{path}.source is fine_tune: set {path}.dit_folder (or {path}.components) to the "
                              "prior to continue")

    def train_config(self, device: str) -> PriorTrainConfig:
        mode = "fine_tune" if self.source == "fine_tune" else "train"
        return PriorTrainConfig.from_dict({**self.train, "mode": mode, "device": device})
