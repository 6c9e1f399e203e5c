"""Generation: DDIM sampling of the kept noises back from the inversion step, decoded to the distilled images.

Batches never straddle two classes, so a class shard runs the very kernels of the full run and the shards'
images concatenate to the unsharded bytes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffdistill.data.bundle import from_signed
from diffdistill.diffusion import ddim_sample
from diffdistill.distill.d3hr.config import GenerationConfig
from diffdistill.prior import LatentPrior
from diffdistill.progress import Progress


@torch.no_grad()
def sample_images(prior: LatentPrior, noise: Tensor, labels: Tensor, config: GenerationConfig, *, num_steps: int,
                  start_step: int, device: str = "cpu") -> Tensor:
    """Images in [0, 1] (float32, on the CPU) of the noises (n, C, h, w) at `start_step` of a `num_steps` DDIM
    schedule (the inversion's), class by class in ascending class order, `config.batch_size` at a time."""
    prior = prior.to(device)
    images = []
    with Progress("d3hr generation", len(labels), unit="images") as bar:
        for k in labels.unique(sorted=True).tolist():
            rows = torch.nonzero(labels == k).flatten()
            for start in range(0, len(rows), config.batch_size):
                index = rows[start:start + config.batch_size]
                z = noise[index].to(device)
                c = prior.condition(labels[index].to(device))
                z0 = ddim_sample(prior, z, c, num_steps=num_steps, start_step=start_step, guidance=config.guidance)
                images.append(from_signed(prior.decode(z0)).cpu())
                bar.advance(len(index))
    return torch.cat(images)


@torch.no_grad()
def soft_labels(teacher: torch.nn.Module, images: Tensor, device: str = "cpu") -> Tensor:
    """The teacher's softmax over the classes for the images in [0, 1] (the soft_label protocol's targets)."""
    return torch.softmax(teacher(images.to(device)), dim=1).cpu()
