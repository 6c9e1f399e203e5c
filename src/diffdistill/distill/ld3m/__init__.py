"""LD3M (Moser et al.): distill per-image latents Z and conditions c through a frozen latent diffusion prior with
the residual sampler (Eq. 12), plus the paper's ablation spaces and pixel-space DC / DM / MTT.

One idea per module: `config` (LD3MConfig, SamplerConfig), `spaces` (one SpaceSpec per space: what is learnt,
how it becomes images, its metadata and learning rates), `state` (LD3MState, its seeded init, checkpoints),
`synthesizer` (state -> images, the latent-sensitivity diagnostic), `loop` (distill_ld3m, the SGD step,
divergence, the result).
"""

from diffdistill.distill.ld3m.config import (
    BACKPROP_MODES,
    INITS,
    OBJECTIVES,
    RESUMABLE_KEYS,
    LD3MConfig,
    SamplerConfig,
)
from diffdistill.distill.ld3m.loop import (
    HISTORY_SKIP,
    DivergenceError,
    LD3MResult,
    distill_ld3m,
    sgd_momentum_step,
)
from diffdistill.distill.ld3m.spaces import (
    LATENT_LR,
    PIXEL_LR,
    SPACE_SPECS,
    SPACES,
    PixelSpace,
    PriorSpace,
    SpaceSpec,
    pixel_step_scale,
)
from diffdistill.distill.ld3m.state import (
    CHECKPOINT,
    CHECKPOINT_FILE,
    LD3MState,
    computed_classes,
    init_state,
    load_checkpoint,
    save_checkpoint,
)
from diffdistill.distill.ld3m.synthesizer import PSNR_CAP_DB, Synthesizer, decode_unit, latent_sensitivity

__all__ = [
    "BACKPROP_MODES",
    "CHECKPOINT",
    "CHECKPOINT_FILE",
    "HISTORY_SKIP",
    "INITS",
    "LATENT_LR",
    "OBJECTIVES",
    "PIXEL_LR",
    "PSNR_CAP_DB",
    "RESUMABLE_KEYS",
    "SPACES",
    "SPACE_SPECS",
    "DivergenceError",
    "LD3MConfig",
    "LD3MResult",
    "LD3MState",
    "PixelSpace",
    "PriorSpace",
    "SamplerConfig",
    "SpaceSpec",
    "Synthesizer",
    "computed_classes",
    "decode_unit",
    "distill_ld3m",
    "init_state",
    "latent_sensitivity",
    "load_checkpoint",
    "pixel_step_scale",
    "save_checkpoint",
    "sgd_momentum_step",
]
