"""The LD3M loop: `distill_ld3m` runs the objective on the synthetic images, pushes the gradient into the space's
learnables (SGD with momentum), checkpoints and resumes through a `WorkDir`, and packages the result.

Each iteration: generate every synthetic image without a graph, compute the objective on the detached images,
then let the space push dL/dX into what it learns (`SpaceSpec.backward`: in prior spaces, regenerate chunk by
chunk with grad, every denoiser call checkpointed; in pixel space, the images themselves). Randomness: the init
(real picks, stored sampler noise) comes from generators of `seed`, and iteration i draws from its own generator
derived from (seed, i), so a resumed run replays the uninterrupted one byte for byte.
"""

from __future__ import annotations

import functools
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import diffdistill.distill.ld3m.state as states
from diffdistill import nets
from diffdistill.config import build, to_dict
from diffdistill.data.bundle import TensorBundle
from diffdistill.diffusion.residual import generate_images
from diffdistill.distill.ld3m.config import LD3MConfig
from diffdistill.distill.ld3m.state import LD3MState
from diffdistill.distill.ld3m.synthesizer import Synthesizer
from diffdistill.distill.objectives import (
    Augment,
    DistributionMatching,
    GradientMatching,
    NetFactory,
    RealImages,
    TrajectoryMatching,
)
from diffdistill.progress import Progress
from diffdistill.rng import derive_seed
from diffdistill.workdir import WorkDir

HISTORY = "history"  # the WorkDir unit of the per-iteration metrics, saved with every checkpoint
HISTORY_SKIP = {"iteration", "memory_kind", "lr", "rounds"}  # constants of the run live in the set's meta


class DivergenceError(RuntimeError):
    """The loss or the learnable tensors became NaN/inf; the message names iteration and learning rate."""


@dataclass
class LD3MResult:
    images: TensorBundle  # the distilled set: images float32 [0, 1], labels, meta
    state: TensorBundle  # Z, c, labels, stored noise, extras: everything that regenerates `images`
    history: dict[str, list[float]] = field(default_factory=dict)  # per-iteration metrics, a resumed run's included


def distill_ld3m(
    real: TensorBundle | Sequence[torch.Tensor],
    prior: Any,
    config: LD3MConfig | Mapping[str, Any],
    *,
    experts: Sequence[torch.Tensor] | None = None,
    checkpoint_dir: str | Path | WorkDir | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    net_factory: NetFactory | None = None,
    augment: Augment | None = None,
    class_names: Sequence[str] | None = None,
    classes: tuple[int, int] | None = None,
) -> LD3MResult:
    """Run LD3M (or a pixel-space / ablation space) and return the distilled set, the learned state and the
    per-iteration history.

    `real`: the real train split (TensorBundle) or one image tensor per class. `prior`: a `LatentPrior` already
    on `config.device` (unused for space "pixel"). `config`: an `LD3MConfig` or its mapping, checked by
    `diffdistill.config.build` (errors name `ld3m.<key>`). `experts`: MTT trajectories (E × (epochs + 1, P)).
    `checkpoint_dir` (a folder or a `WorkDir`): resume from / checkpoint to (the state and the history, every
    `checkpoint_every` iterations and at the end). `on_step(metrics)` after each iteration. `net_factory` /
    `augment` override the nets and DSA built from the config (tests). `classes` = [start, stop): distill only
    those classes (a class shard; DM only: per-class loss and draws, and the full run's chunks via
    `computed_classes`, make the result equal the full run's rows for those classes).
    """
    config = build(LD3MConfig, to_dict(config) if isinstance(config, LD3MConfig) else config, "ld3m")
    spec, device = config.spec, torch.device(config.device)
    if isinstance(real, TensorBundle):
        class_names = class_names or real.class_names
        real = RealImages.from_bundle(real)
    else:
        real = RealImages.from_classes(real)
    class_names = list(class_names or [str(k) for k in range(real.num_classes)])
    _check_classes(classes, config, real.num_classes)
    prior = spec.prepare_prior(prior, real)
    if augment is None and config.dsa_strategy.lower() not in ("", "none"):
        from diffdistill.augment import DSA

        augment = DSA(config.dsa_strategy)

    work = WorkDir(checkpoint_dir) if isinstance(checkpoint_dir, (str, Path)) else checkpoint_dir
    loaded = None if work is None else states.load_checkpoint(work, config)
    if loaded is not None:
        state, checkpoint_step = loaded[0].to(device), loaded[0].step
        history = {k: v[:state.step] for k, v in (work.get_json(HISTORY) or {}).items()}
    else:
        state = states.init_state(real, prior, config, None if classes is None else
                                  states.computed_classes(classes, config, real.num_classes))
        checkpoint_step, history = None, {}
    objective = _build_objective(config, real, experts, net_factory, augment)
    params, lrs = _learnables(state, objective, config, real, device)
    lr = config.learning_rate()

    synthesize = Synthesizer(prior, state, config, real.image_shape)
    num_samples, chunk = state.labels.shape[0], config.sampler.chunk_size
    # Iteration 0 of a prior space: does the learnable latent drive the images? (into iteration 0's metrics)
    diagnostic = spec.diagnostic(synthesize, config.seed) if state.step == 0 else {}

    def diverged(iteration: int, what: str) -> DivergenceError:
        where = (f"last good checkpoint: {work.file(states.CHECKPOINT_FILE)} (saved after {checkpoint_step} iterations)"
                 if checkpoint_step is not None else "no checkpoint was written yet")
        return DivergenceError(f"LD3M diverged at iteration {iteration} ({config.objective}, space {config.space}): "
                               f"{what} with learning rate lr={lr:g}; lower `lr` and resume. {where}")

    with Progress(_description(config, classes), config.iterations, done=state.step, unit="it") as bar:
        for iteration in range(state.step, config.iterations):
            generator = torch.Generator().manual_seed(derive_seed(config.seed, iteration))
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            started = time.perf_counter()
            losses, grad_norms, regen_errors = [], {name: [] for name in params}, []
            rounds = objective.start_iteration(generator)
            for round_index in range(rounds):
                images = generate_images(synthesize, num_samples, chunk)
                if round_index > 0:  # DC: the net trains on the set as it is after the last update
                    objective.prepare_round(images, state.labels, generator)
                loss_fn = functools.partial(objective.loss, labels=state.labels, generator=generator)
                loss, regen_error = spec.backward(synthesize, loss_fn, images)
                if regen_error is not None:
                    regen_errors.append(regen_error)
                if not torch.isfinite(loss):
                    raise diverged(iteration, f"loss is {float(loss)}")
                losses.append(float(loss))
                for name, tensor in params.items():
                    grad_norms[name].append(0.0 if tensor.grad is None else float(tensor.grad.norm()))
                sgd_momentum_step(params, state.momentum, lrs, config.momentum)
                bad = [name for name, tensor in params.items() if not torch.isfinite(tensor).all()]
                if bad:
                    raise diverged(iteration, f"{bad} became non-finite after the update")
            state.step = iteration + 1
            peak, kind = _peak_memory(device)
            metrics = {"iteration": iteration, "loss": sum(losses) / len(losses), "time_s": time.perf_counter() - started,
                       "peak_memory_bytes": peak, "memory_kind": kind, "lr": lr, "rounds": rounds}
            metrics.update({f"grad_norm_{name}": sum(v) / len(v) for name, v in grad_norms.items()})
            if regen_errors:
                metrics["regeneration_max_abs_diff"] = max(regen_errors)
            metrics.update({name: float(t.detach()) for name, t in state.extras.items() if t.numel() == 1})
            if iteration == 0:
                metrics.update(diagnostic)
            for metric, value in metrics.items():
                if metric not in HISTORY_SKIP:
                    history.setdefault(metric, []).append(float(value))
            if on_step is not None:
                on_step(metrics)
            bar.advance(loss=metrics["loss"], s_per_it=metrics["time_s"])
            if work is not None and (state.step % config.checkpoint_every == 0 or state.step == config.iterations):
                work.put_json(HISTORY, history)  # first: a kill between the two leaves a longer history, cut on resume
                states.save_checkpoint(work, state, config)
                checkpoint_step = state.step
    return _result(state, synthesize, config, class_names, real, classes, history)


@torch.no_grad()
def sgd_momentum_step(params: dict[str, torch.Tensor], momentum: dict[str, torch.Tensor],
                      lrs: dict[str, float | torch.Tensor], beta: float) -> None:
    """torch.optim.SGD(momentum=beta, dampening=0) written out, so its buffers are plain saved tensors.
    A learning rate may be a tensor broadcasting against its parameter (pixel space: one per channel)."""
    for name, param in params.items():
        grad = param.grad if param.grad is not None else torch.zeros_like(param)
        buffer = momentum[name]
        buffer.mul_(beta).add_(grad)
        if isinstance(lrs[name], torch.Tensor):
            param.sub_(buffer * lrs[name])
        else:
            param.add_(buffer, alpha=-lrs[name])
        param.grad = None


def _learnables(state: LD3MState, objective: Any, config: LD3MConfig, real: RealImages,
                device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, float | torch.Tensor]]:
    """The tensors the SGD step updates (the space's, then the objective's own, e.g. MTT's syn_lr) and their
    learning rates (the space's step scales applied: pixel steps are the references' steps in normalised space)."""
    lr = config.learning_rate()
    params = state.learnable(config.spec)
    lrs: dict[str, float | torch.Tensor] = dict.fromkeys(params, lr)
    for name, scale in config.spec.step_scales(real, device).items():
        lrs[name] = scale * lr
    for name, (tensor, extra_lr) in objective.extra_parameters().items():
        if name in state.extras:
            with torch.no_grad():
                tensor.copy_(state.extras[name])
        state.extras[name] = tensor
        params[f"extra.{name}"] = tensor
        lrs[f"extra.{name}"] = extra_lr
    for name, tensor in params.items():
        tensor.requires_grad_(True)
        state.momentum.setdefault(name, torch.zeros_like(tensor))
    return params, lrs


def _build_objective(config: LD3MConfig, real: RealImages, experts: Sequence[torch.Tensor] | None,
                     net_factory: NetFactory | None, augment: Augment | None) -> Any:
    channels, size = real.image_shape[0], real.image_shape[-1]
    section = getattr(config, config.objective)
    factory = net_factory or nets.net_factory(section.net, channels, real.num_classes, size)
    device = torch.device(config.device)
    if config.objective == "dc":
        return GradientMatching(real, config.dc_config(), ipc=config.ipc, net_factory=factory, augment=augment,
                                device=device)
    if config.objective == "dm":
        return DistributionMatching(real, section, net_factory=factory, augment=augment, device=device)
    if experts is None:
        raise ValueError("objective 'mtt' needs expert trajectories: pass experts=...")
    return TrajectoryMatching(real, experts, section, net_factory=factory, augment=augment, device=device)


def _peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process_max_rss"


def _description(config: LD3MConfig, classes: tuple[int, int] | None) -> str:
    shard = "" if classes is None else f" classes {classes[0]}-{classes[1] - 1}"
    return f"ld3m {config.objective} {config.space} ipc{config.ipc}{shard}"


def _check_classes(classes: tuple[int, int] | None, config: LD3MConfig, num_classes: int) -> None:
    if classes is None:
        return
    if config.objective != "dm":
        raise ValueError(f"a class range (class shard) needs objective 'dm', whose classes are independent; "
                         f"{config.objective!r} couples classes (one net over the whole set): run it unsharded")
    first, stop = classes
    if not 0 <= first < stop <= num_classes:
        raise ValueError(f"classes=[{first}, {stop}) must be a non-empty range inside [0, {num_classes})")


def _result(state: LD3MState, synthesize: Synthesizer, config: LD3MConfig, class_names: list[str],
            real: RealImages, classes: tuple[int, int] | None, history: dict[str, list[float]]) -> LD3MResult:
    """The distilled set and the state; a class shard keeps only its own classes' rows (not the ghost ones)."""
    spec = config.spec
    for tensor in state.learnable(spec).values():
        tensor.requires_grad_(False)
    # The distilled set: float32 images clamped to [0, 1] (pixels learn unclamped; no 8-bit quantisation).
    images = generate_images(synthesize, state.labels.shape[0], config.sampler.chunk_size).clamp(0.0, 1.0)
    synthesize.trajectories.clear()
    meta = {
        "method": spec.method(config),
        "ipc": config.ipc,
        "objective": config.objective,
        "space": config.space,
        "class_names": list(class_names),
        "num_classes": real.num_classes,
        "iterations": state.step,
        "lr": config.learning_rate(),
        "seed": config.seed,
        "init": config.init,
        "image_size": real.image_shape[-1],
    }
    if config.objective == "dc":
        meta["dc_loops"] = list(config.dc_config().loops(config.ipc))  # (outer, inner) rounds per iteration
    # the objective's learned scalars, e.g. MTT's syn_lr: MTT's own evaluation trains with it (dc_reference)
    meta.update({name: float(t.detach()) for name, t in state.extras.items() if t.numel() == 1})
    meta.update(spec.meta(config))
    tensors, labels = state.tensors(), state.labels.cpu()
    if classes is not None:
        rows = (labels >= classes[0]) & (labels < classes[1])
        tensors = {k: v if k.startswith("extra.") else v[rows].clone() for k, v in tensors.items()}
        images, labels = images[rows.to(images.device)], labels[rows]
    state_bundle = TensorBundle({k: v for k, v in tensors.items() if not k.startswith("momentum.")},
                                {**meta, "config": config.to_dict(), "step": state.step})
    bundle = TensorBundle({"images": images.detach().float().cpu().contiguous(), "labels": labels}, meta)
    return LD3MResult(images=bundle, state=state_bundle, history=history)
