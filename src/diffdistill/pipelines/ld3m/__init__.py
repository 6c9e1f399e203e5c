"""`ld3m`: LD3M distillation (DC / DM / MTT through the residual diffusion sampler) and its ablation spaces."""

from diffdistill.pipelines.ld3m.pipeline import create_pipeline

__all__ = ["create_pipeline"]
