"""Throughput of the evaluation training loop vs a plain DataLoader loop on the same ConvNet and data.

Ours: `diffdistill.evaluation.fit` (data resident on the device, seeded index permutation,
batched DSA on the device, loss summed on the device and read once per epoch), measured twice:
in float32 (the same arithmetic as the baseline: the loop's own overhead) and with the protocol's
`precision: bf16` (bfloat16 autocast of forward and loss; float32 weights and optimiser).
Baseline: the reference pattern — `TensorDataset` + `DataLoader(shuffle=True)`, per batch
a host→device copy, the same DSA, the same net / SGD step, and `loss.item()` every batch.

    python benchmarks/bench_eval.py                      # CPU, small
    python benchmarks/bench_eval.py --device cuda --n 20000 --epochs 3
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from diffdistill.augment import DSA
from diffdistill.data.bundle import TensorBundle
from diffdistill.evaluation import fit, get_protocol
from diffdistill.evaluation.train import channel_stats
from diffdistill.nets import build_net


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_data(n: int, size: int, channels: int, classes: int) -> TensorBundle:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    return TensorBundle({"images": images, "labels": labels}, {"num_classes": classes})


def ours(data: TensorBundle, epochs: int, batch: int, width: int, device: torch.device, precision: str) -> float:
    protocol = get_protocol("dc", epochs=epochs, batch_size=batch, precision=precision)
    fit(
        data,
        arch="convnet",
        protocol=get_protocol(protocol, epochs=1),
        seed=0,
        device=device,
        allow_unbalanced=True,
        net_overrides={"width": width},
    )  # warm-up (allocator, kernels)
    _sync(device)
    start = time.perf_counter()
    fit(
        data,
        arch="convnet",
        protocol=protocol,
        seed=0,
        device=device,
        allow_unbalanced=True,
        net_overrides={"width": width},
    )
    _sync(device)
    return epochs * len(data) / (time.perf_counter() - start)


def dataloader_baseline(data: TensorBundle, epochs: int, batch: int, width: int, device: torch.device) -> float:
    mean, std = channel_stats(data.images)
    images = (data.images.float() / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    loader = DataLoader(
        TensorDataset(images, data.labels),
        batch_size=batch,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        num_workers=0,
    )
    net = build_net("convnet", images.shape[1], data.num_classes, images.shape[2], width=width).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    dsa, generator = DSA(), torch.Generator().manual_seed(1)

    def run_epoch() -> None:
        net.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(net(dsa(x, generator)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()  # what the reference loops log every batch

    run_epoch()  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        run_epoch()
    _sync(device)
    return epochs * len(data) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="training images")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two loops this often, report medians")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = make_data(args.n, args.size, args.channels, args.classes)
    bases, mines, halves = [], [], []
    for _ in range(args.repeats):  # alternating, so load from other processes hits all alike
        bases.append(dataloader_baseline(data, args.epochs, args.batch, args.width, device))
        mines.append(ours(data, args.epochs, args.batch, args.width, device, "fp32"))
        halves.append(ours(data, args.epochs, args.batch, args.width, device, "bf16"))
    base, mine, half = (sorted(v)[len(v) // 2] for v in (bases, mines, halves))
    print(
        f"device={device} n={args.n} size={args.size} batch={args.batch} width={args.width} epochs={args.epochs} "
        f"threads={torch.get_num_threads()} repeats={args.repeats} (medians)"
    )
    print(f"DataLoader + per-batch DSA loop : {base:10.1f} images/s")
    print(f"diffdistill.evaluation.fit fp32 : {mine:10.1f} images/s   speed-up {mine / base:5.2f}x")
    print(f"diffdistill.evaluation.fit bf16 : {half:10.1f} images/s   speed-up {half / base:5.2f}x")


if __name__ == "__main__":
    main()
