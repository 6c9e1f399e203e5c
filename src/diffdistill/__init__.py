"""diffdistill: dataset distillation with latent diffusion priors (LD3M, D3HR)."""

__version__ = "0.1.0"
