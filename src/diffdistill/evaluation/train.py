"""One training loop for every classifier the project trains: evaluation nets, teachers, feature nets.

Data lives on the device as tensors (uint8 stays uint8 until a batch is drawn), minibatches
come from a seeded index permutation, augmentation runs batched on the device; no
DataLoader, no per-sample Python. The test split is read once, after the last epoch.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffdistill.augment import DSA, cutmix, dsa_strategy_for, random_resized_crop_flip
from diffdistill.data.bundle import TensorBundle, to_unit
from diffdistill.evaluation.protocols import ProtocolConfig, decay_step, get_protocol, lr_at
from diffdistill.nets import build_net
from diffdistill.progress import Progress
from diffdistill.rng import split_seeds

EpochCallback = Callable[[int, dict[str, float]], None]


class NormalizedClassifier(nn.Module):
    """`net` behind its input normalisation: takes images in [0, 1], applies (x - mean) / std."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1).float().clone())
        self.register_buffer("std", std.reshape(1, -1, 1, 1).float().clone())

    def normalize(self, x_unit: torch.Tensor) -> torch.Tensor:
        return (x_unit - self.mean) / self.std

    def features(self, x_unit: torch.Tensor) -> torch.Tensor:
        return self.net.features(self.normalize(x_unit))

    def forward(self, x_unit: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x_unit))


def soft_label_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher/T) ‖ softmax(student/T)), mean over the batch, no T² factor (RDED / D3HR)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ; "
            "the teacher must predict the same classes"
        )
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)


class WeightEMA:
    """EMA of a net's parameters (buffers copied), with ema-pytorch's `power=1` warm-up.

    Update k (0-based) uses decay min(β, k / (k + 1)): the first is a copy, the first
    ~1/(1-β) are a running mean, then a plain EMA with β, as GLaD's `EMA(net, beta,
    power=1, update_after_step=0)`.
    """

    def __init__(self, net: nn.Module, decay: float) -> None:
        self.decay = decay
        self.net = copy.deepcopy(net).requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        decay = min(self.decay, self.updates / (self.updates + 1))
        for ema_param, param in zip(self.net.parameters(), net.parameters(), strict=True):
            ema_param.lerp_(param.detach(), 1.0 - decay)
        for ema_buffer, buffer in zip(self.net.buffers(), net.buffers(), strict=True):
            ema_buffer.copy_(buffer)
        self.updates += 1


# -- validation at the boundary -------------------------------------------------------------


def _checked_images(images: torch.Tensor, split: str) -> torch.Tensor:
    if images.ndim != 4:
        raise ValueError(f"{split} images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[2] != images.shape[3]:
        raise ValueError(f"{split} images must be square, got {images.shape[2]}×{images.shape[3]}")
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise ValueError(f"{split} images must be uint8 or float in [0, 1], got dtype {images.dtype}")
    if images.numel() and (images.min() < -1e-4 or images.max() > 1 + 1e-4):
        raise ValueError(
            f"{split} images must be float in [0, 1] (or uint8), got range "
            f"[{images.min().item():.3f}, {images.max().item():.3f}]; convert [-1, 1] images with from_signed"
        )
    return images


def _checked_labels(labels: torch.Tensor, count: int, num_classes: int, split: str) -> torch.Tensor:
    if labels.ndim != 1 or labels.shape[0] != count:
        raise ValueError(f"{split} labels must have shape ({count},), got {tuple(labels.shape)}")
    if labels.dtype in (torch.float16, torch.float32, torch.float64, torch.bool):
        raise ValueError(f"{split} labels must be integer class indices, got dtype {labels.dtype}")
    if count and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{split} labels must lie in [0, {num_classes}), got [{labels.min().item()}, {labels.max().item()}]; "
            "set meta['num_classes'] (or class_names) if the set has more classes"
        )
    return labels.long()


def _checked_train(train: TensorBundle, allow_unbalanced: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    if "images" not in train or "labels" not in train:
        raise ValueError(f"train bundle needs 'images' and 'labels' tensors, has {sorted(train.tensors)}")
    images = _checked_images(train["images"], "train")
    if images.shape[0] == 0:
        raise ValueError("train set is empty; a distilled set needs at least one image per class")
    num_classes = train.num_classes
    labels = _checked_labels(train["labels"], images.shape[0], num_classes, "train")
    counts = torch.bincount(labels, minlength=num_classes)
    if not allow_unbalanced and bool((counts != counts[0]).any()):
        raise ValueError(
            f"train set is unbalanced (images per class: {counts.tolist()}); distilled sets have the same count "
            "for every class — pass allow_unbalanced=True to train on it anyway"
        )
    return images, labels, num_classes


def _checked_split(bundle: TensorBundle, like: torch.Tensor, num_classes: int, split: str) -> None:
    """Shape / dtype / label-range checks on a held-out split, before any training is spent."""
    if "images" not in bundle or "labels" not in bundle:
        raise ValueError(f"{split} bundle needs 'images' and 'labels' tensors, has {sorted(bundle.tensors)}")
    images = _checked_images(bundle["images"], split)
    if images.shape[1:] != like.shape[1:]:
        raise ValueError(f"{split} images are {tuple(images.shape[1:])}, train images {tuple(like.shape[1:])}")
    _checked_labels(bundle["labels"], images.shape[0], num_classes, split)
    if images.shape[0] == 0:
        raise ValueError(f"{split} set is empty")


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std of images in [0, 1] (uint8 is scaled), in float64 chunks."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, images.shape[0], chunk):
        block = to_unit(images[start : start + chunk]).double().cpu()
        total += block.sum(dim=(0, 2, 3))
        squares += block.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp(min=0).sqrt().clamp(min=1e-3)  # constant channel: no blow-up
    return mean.float(), std.float()


def normalization_for(
    protocol: ProtocolConfig, train: TensorBundle, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """protocol.mean/std, else train.meta['mean'/'std'], else statistics of the train images."""
    channels = images.shape[1]
    if protocol.mean is not None:
        mean, std, where = torch.tensor(protocol.mean), torch.tensor(protocol.std), "protocol"
    elif "mean" in train.meta and "std" in train.meta:
        mean, std, where = torch.tensor(train.meta["mean"]), torch.tensor(train.meta["std"]), "train.meta"
    else:
        return channel_stats(images)
    if mean.numel() != channels or std.numel() != channels or bool((std <= 0).any()):
        raise ValueError(
            f"{where} mean/std must have {channels} entries with std > 0, got {mean.tolist()}, {std.tolist()}"
        )
    return mean.float(), std.float()


# -- the loop ---------------------------------------------------------------------------------


def _generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """Independent CPU generators for net init and for data order / augmentation, derived from `seed`."""
    init_seed, data_seed = split_seeds(seed, 2)
    return torch.Generator().manual_seed(init_seed), torch.Generator().manual_seed(data_seed)


def _optimizer(net: nn.Module, protocol: ProtocolConfig, lr: float) -> torch.optim.Optimizer:
    params = [p for p in net.parameters() if p.requires_grad]
    if protocol.decay_norm_and_bias:
        groups = [{"params": params, "weight_decay": protocol.weight_decay}]
    else:
        groups = [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": protocol.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
    if protocol.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=protocol.momentum)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))


def _augmenter(
    protocol: ProtocolConfig, train: TensorBundle
) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    if protocol.augment == "dsa":
        dataset = train.meta.get("dataset") or train.meta.get("source")
        dsa = DSA(protocol.dsa_strategy if protocol.dsa_strategy is not None else dsa_strategy_for(dataset))
        return lambda x, g: dsa(x, g, siamese=False)
    if protocol.augment == "crop_flip":
        return random_resized_crop_flip
    return lambda x, g: x


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 512,
) -> tuple[float, float]:
    """(top-1 accuracy as a fraction, mean cross-entropy) of `model` (taking [0, 1] images) on a split."""
    model.eval()
    correct = torch.zeros((), device=device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    for start in range(0, images.shape[0], batch_size):
        x = to_unit(images[start : start + batch_size].to(device, non_blocking=True))
        y = labels[start : start + batch_size].to(device, non_blocking=True).long()
        logits = model(x)
        correct += (logits.argmax(dim=1) == y).sum()
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
    count = max(images.shape[0], 1)
    return correct.item() / count, loss_sum.item() / count


def fit(
    train: TensorBundle,
    *,
    arch: str,
    protocol: str | ProtocolConfig,
    seed: int,
    device: str | torch.device = "cpu",
    teacher: nn.Module | None = None,
    val: TensorBundle | None = None,
    val_every: int | None = None,
    allow_unbalanced: bool = False,
    callback: EpochCallback | None = None,
    net_overrides: dict[str, Any] | None = None,
) -> tuple[NormalizedClassifier, dict[str, Any]]:
    """Train a fresh `arch` on `train` under `protocol`; return (model for testing, history).

    The returned model takes [0, 1] images and is in eval mode; it holds the EMA weights
    when the protocol uses an EMA. `val` (optional) is scored every `val_every` epochs
    (default: 10 times per run) for monitoring only — nothing is selected on it. What the
    protocol resolves for this set (`protocol.net_for(arch)`, the batch size for the set's
    meta `ipc`, the lr from its meta, the epochs trained) is recorded in the history.
    """
    protocol = get_protocol(protocol)
    images, labels, num_classes = _checked_train(train, allow_unbalanced)
    if protocol.loss == "soft_label" and teacher is None:
        raise ValueError(f"protocol {protocol.name!r} trains on teacher soft labels; pass teacher=<trained classifier>")
    if protocol.loss == "ce" and teacher is not None:
        raise ValueError(f"protocol {protocol.name!r} uses hard labels and would ignore the teacher; pass teacher=None")
    if val is not None:
        _checked_split(val, images, num_classes, "val")
    mean, std = normalization_for(protocol, train, images)
    init_generator, data_generator = _generators(seed)
    net_name = protocol.net_for(arch)
    net = build_net(
        net_name, images.shape[1], num_classes, images.shape[2], generator=init_generator, **(net_overrides or {})
    ).to(device)
    model = NormalizedClassifier(net, mean, std).to(device)
    ema = WeightEMA(net, protocol.ema_decay) if protocol.ema_decay is not None else None
    test_model = NormalizedClassifier(ema.net, mean, std).to(device) if ema else model
    if teacher is not None:
        teacher = teacher.to(device).eval()
    augment = _augmenter(protocol, train)
    base_lr, lr_source = protocol.learning_rate(arch, train.meta)
    optimizer = _optimizer(net, protocol, base_lr)
    x_all, y_all = images.to(device), labels.to(device)
    count, batch_size = images.shape[0], protocol.batch_size_for(train.meta.get("ipc"))
    steps_per_epoch = math.ceil(count / batch_size)
    epochs = protocol.epochs_trained
    total_steps = epochs * steps_per_epoch
    reset_step = decay_step(protocol, total_steps, steps_per_epoch) if protocol.reset_optimizer_at_decay else None
    val_every = val_every or max(1, protocol.epochs // 10)
    # per-epoch (loss sum, correct count) stay on the device: no host sync per epoch unless someone asks
    totals = torch.zeros(epochs, 2, device=device)
    history: dict[str, Any] = {"val_accuracy": [], "lr": []}
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=protocol.precision == "bf16")
    step, started = 0, time.perf_counter()
    with Progress(f"train {arch} seed {seed}", epochs, unit="epochs") as bar:
        for epoch in range(epochs):
            net.train()
            order = torch.randperm(count, generator=data_generator).to(device, non_blocking=True)
            for index in range(steps_per_epoch):
                batch = order[index * batch_size : (index + 1) * batch_size]
                x = augment(model.normalize(to_unit(x_all[batch])), data_generator)
                y = y_all[batch]
                if protocol.cutmix:
                    x = cutmix(x, data_generator)[0]
                if step == reset_step:  # DC recreates SGD at the decay: the momentum buffers restart from zero
                    optimizer = _optimizer(net, protocol, base_lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(protocol, step, total_steps, base_lr, steps_per_epoch=steps_per_epoch)
                with autocast:
                    logits = net(x)
                    if protocol.loss == "soft_label":
                        with torch.no_grad():
                            teacher_logits = teacher(x * model.std + model.mean)  # teachers take [0, 1] images
                        loss = soft_label_loss(logits.float(), teacher_logits.float(), protocol.temperature)
                    else:
                        loss = F.cross_entropy(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                totals[epoch, 0] += loss.detach() * batch.shape[0]
                totals[epoch, 1] += (logits.detach().argmax(dim=1) == y).sum()
                step += 1
            if ema is not None:
                ema.update(net)
            history["lr"].append(optimizer.param_groups[0]["lr"])
            validate = val is not None and ((epoch + 1) % val_every == 0 or epoch + 1 == epochs)
            if validate:
                accuracy = evaluate_accuracy(
                    test_model, val["images"], val["labels"], device=device, batch_size=protocol.eval_batch_size
                )[0]
                history["val_accuracy"].append((epoch, accuracy))
            if callback is not None:
                loss_sum, correct = totals[epoch].tolist()
                stats = {"epoch": epoch, "train_loss": loss_sum / count, "train_accuracy": correct / count}
                if validate:
                    stats["val_accuracy"] = history["val_accuracy"][-1][1]
                callback(epoch, stats)
            bar.advance(**({"val_accuracy": history["val_accuracy"][-1][1]} if validate else {}))
    totals = (totals / count).cpu()  # waits for the device, so the timing below is honest
    seconds = time.perf_counter() - started
    history.update(
        train_loss=totals[:, 0].tolist(),
        train_accuracy=totals[:, 1].tolist(),
        steps=total_steps,
        train_seconds=seconds,
        images_per_second=epochs * count / max(seconds, 1e-9),
        lr_base=base_lr,
        lr_source=lr_source,
        batch_size=batch_size,
        net=net_name,
        epochs_trained=epochs,
        mean=mean.tolist(),
        std=std.tolist(),
        num_classes=num_classes,
        num_train=count,
    )
    return test_model.eval(), history


def train_classifier(train: TensorBundle, *, allow_unbalanced: bool = True, **options: Any) -> NormalizedClassifier:
    """Train and return a classifier taking [0, 1] images (teachers, herding features, fidelity judges).

    `options` are `fit`'s (arch, protocol, seed, device, teacher, val, callback, net_overrides): the same loop as
    `train_and_evaluate`; real splits are rarely exactly balanced, hence `allow_unbalanced=True` here. The
    history is attached as `model.training_history`.
    """
    model, history = fit(train, allow_unbalanced=allow_unbalanced, **options)
    model.training_history = history
    return model


def train_and_evaluate(train: TensorBundle, test: TensorBundle, *, arch: str, protocol: str | ProtocolConfig,
                       seed: int, device: str | torch.device = "cpu", allow_unbalanced: bool = False,
                       **options: Any) -> dict[str, Any]:
    """Train a fresh `arch` on `train` (distilled or real) and score it ONCE on `test` after the last epoch.

    Returns a JSON-serialisable dict: `test_accuracy` (top-1 fraction, final epoch — never
    a max over epochs), `test_loss`, per-epoch `train_loss` / `train_accuracy` / `lr`,
    `val_accuracy` [(epoch, acc)] when `val` is given, and the run's settings. The test
    split is only shape/label-checked before training. A distilled set must have the same
    number of images in every class unless `allow_unbalanced=True` (use it for full-data
    runs on real splits).
    """
    protocol = get_protocol(protocol)
    train_images = _checked_train(train, allow_unbalanced)[0]
    _checked_split(test, train_images, train.num_classes, "test")
    model = train_classifier(train, arch=arch, protocol=protocol, seed=seed, device=device,
                             allow_unbalanced=allow_unbalanced, **options)  # options: teacher, val, callback, ...
    history = model.training_history
    test_images, test_labels = test["images"], test["labels"]
    accuracy, loss = evaluate_accuracy(
        model, test_images, test_labels, device=device, batch_size=protocol.eval_batch_size
    )
    return {
        "test_accuracy": accuracy,
        "test_loss": loss,
        "arch": arch,
        "protocol": protocol.name,
        "protocol_config": protocol.to_dict(),
        "seed": seed,
        "epochs": protocol.epochs,
        "ema": protocol.ema_decay is not None,
        "num_test": int(test_images.shape[0]),
        **history,
    }
