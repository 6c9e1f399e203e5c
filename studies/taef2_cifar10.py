"""Can the pretrained TAEF2 autoencoder (../shared/data/taef2-diffusers) be CIFAR-10's latent space? (issue #16)

The in-project autoencoder recipe, sized for 16-px digits, reached 20.3 dB on natural images; issue #16 asks for
>= 24 dB reconstruction PSNR on CIFAR-10. TAEF2 is frozen here: this measures what it gives as it is, at the
data's 32 px and with the images resized up before encoding (the decoded image resized back, antialiased
bilinear, as `LatentPrior` does for a prior whose native size differs from the data's). Judged on a validation
part of the TRAIN split (`--per-class` images per class, seeded); the test split is never read.

    python studies/taef2_cifar10.py --out studies/results/taef2_cifar10.jsonl   # ~1 min on one thread
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from diffdistill.data.bundle import to_unit
from diffdistill.data.sources import SourceConfig, load_source
from diffdistill.prior.load import load_tiny_autoencoder

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [0, 1], one value per image."""
    return 10 * torch.log10(1.0 / (a - b).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10))


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar10", default=str(SHARED / "cifar10"))
    parser.add_argument("--taef2", default=str(SHARED / "taef2-diffusers"))
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, _, _ = load_source(SourceConfig(source="cifar10", root=args.cifar10, max_per_class=args.per_class,
                                           max_test_per_class=1, seed=2024))
    images = to_unit(train.tensors["images"])
    vae = load_tiny_autoencoder(Path(args.taef2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as handle, torch.no_grad():
        for size in args.sizes:
            start = time.process_time()
            latents = vae.encode(resize(images, size) * 2 - 1).latents
            decoded = resize((vae.decode(latents).sample.clamp(-1, 1) + 1) / 2, images.shape[-1]).clamp(0, 1)
            seconds = time.process_time() - start
            psnr = psnr_per_image(decoded, images)
            row = {"size": size, "latent_shape": list(latents.shape[1:]), "latent_dim": int(latents[0].numel()),
                   "images": len(images), "psnr_db": round(float(psnr.mean()), 2),
                   "psnr_db_std": round(float(psnr.std()), 2), "cpu_ms_per_image": round(1000 * seconds / len(images), 1)}
            print(json.dumps(row))
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
