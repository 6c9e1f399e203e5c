"""What lossy storage costs the instrument: the same images, lossless vs re-encoded as JPEG, same training.

The CIFAR-10 copy on these machines (../shared/data/cifar10) is the official split re-encoded as baseline JPEG
at quality 75 with 4:2:0 chroma (PROVENANCE.md); no lossless copy is reachable, so its effect is measured on a
lossless dataset instead: Fashion-MNIST (Debian `dataset-fashion-mnist`), its 32-px train and test images
re-encoded at `--quality` (grey: no chroma to subsample, so this bounds the luma part of the loss only). Both
variants train ConvNet-3 under the calibration protocol (`dc_reference_no_augment`) with the same seeds: a random
IPC-`--ipc` subset (the same indices in both) for `--epochs` epochs, and the full-data bound for
`--full-epochs`. Prints the PSNR of the re-encoding and both accuracies; the difference is the compression's.

    python benchmarks/jpeg_effect.py                                  # ~45 min on one core (2026-12-03)
    python benchmarks/jpeg_effect.py --full-epochs 0 --seeds 0 1 2    # the random subset only
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
import torch
from PIL import Image

from diffdistill.data.bundle import TensorBundle
from diffdistill.data.sources import SourceConfig, load_source
from diffdistill.distill.baselines import random_real_subset
from diffdistill.evaluation import get_protocol, train_and_evaluate


def jpeg_roundtrip(images: torch.Tensor, quality: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> the same images after a baseline JPEG encode / decode at `quality` (Pillow's
    libjpeg, standard tables; colour with 4:2:0 chroma subsampling, as the CIFAR-10 copy)."""
    out = np.empty(tuple(images.shape), dtype=np.uint8)
    for i, image in enumerate(images.numpy()):
        grey = image.shape[0] == 1
        picture = Image.fromarray(image[0] if grey else image.transpose(1, 2, 0), mode="L" if grey else "RGB")
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=quality, subsampling=2)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
        out[i] = decoded[None] if grey else decoded.transpose(2, 0, 1)
    return torch.from_numpy(out)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def with_images(bundle: TensorBundle, images: torch.Tensor) -> TensorBundle:
    return TensorBundle({"images": images, "labels": bundle["labels"]}, dict(bundle.meta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--quality", type=int, default=75)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=300, help="random-subset training epochs (DC: 300)")
    parser.add_argument("--full-epochs", type=int, default=2, help="full-data epochs; 0 skips the bound")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    args = parser.parse_args()
    torch.set_num_threads(1)

    train, test, _ = load_source(SourceConfig.from_dict({"source": "fashion_mnist", "root": args.root,
                                                         "image_size": 32}))
    start = time.perf_counter()
    lossy = {"train": jpeg_roundtrip(train["images"], args.quality), "test": jpeg_roundtrip(test["images"], args.quality)}
    print(f"JPEG q{args.quality} round trip of {len(train['images']) + len(test['images'])} images: "
          f"{time.perf_counter() - start:.0f} s; PSNR train {psnr(train['images'], lossy['train']):.2f} dB, "
          f"test {psnr(test['images'], lossy['test']):.2f} dB")
    variants = {"lossless": (train, test),
                f"jpeg q{args.quality}": (with_images(train, lossy["train"]), with_images(test, lossy["test"]))}
    protocol = get_protocol("dc_reference_no_augment", epochs=args.epochs, precision=args.precision)
    for name, (tr, te) in variants.items():
        accs = []
        for seed in args.seeds:
            subset = random_real_subset(tr, args.ipc, seed)  # drawn from the labels only: the same images in both
            accs.append(100 * train_and_evaluate(subset, te, arch="convnet", protocol=protocol, seed=seed)["test_accuracy"])
        print(f"{name:>10}: random IPC {args.ipc}, {args.epochs} epochs, seeds {args.seeds}: "
              f"{statistics.fmean(accs):.2f} ± {statistics.pstdev(accs):.2f} ({', '.join(f'{a:.1f}' for a in accs)})")
    if args.full_epochs:
        full = get_protocol("dc_reference_no_augment", epochs=args.full_epochs, precision=args.precision)
        for name, (tr, te) in variants.items():
            start = time.perf_counter()
            acc = 100 * train_and_evaluate(tr, te, arch="convnet", protocol=full, seed=0,
                                           allow_unbalanced=True)["test_accuracy"]
            print(f"{name:>10}: full data, {args.full_epochs} (+1) epochs, seed 0: {acc:.2f} "
                  f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
