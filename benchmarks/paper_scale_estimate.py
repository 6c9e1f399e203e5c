"""Expected GPU time, memory and disk per phase of `conf/paper`, computed from the models, not guessed.

No GPU, no weights: the paper's models are built on the `meta` device (shapes only) and every unit
of work is run there once under `torch.utils.flop_counter.FlopCounterMode`, so FLOPs are exact
counts of the aten ops PyTorch dispatches (matmul / conv / attention; elementwise ops are not FLOPs
there). Backward passes are counted the same way (autograd runs on meta), including the input-only
backward of the frozen prior and the double backward of DC and MTT. Units measured:
  DiT-XL/2-256 (diffusers DiTTransformer2DModel, 28 x 16 heads x 72, patch 2, learned sigma),
  the SD VAE (AutoencoderKL, sd-vae-ft-mse config) encode / decode at 256 px, and the evaluation nets
  (`diffdistill.nets.build_net`) at the data's 128 px: a training step, DC / DM / MTT losses.
The phases then combine them with the counts of `conf/<env>` (read with the project's config loader)
and the dataset sizes (ImageNette: 9,469 train / 3,925 val images; ImageNet-A..E: at most 1,300
train images per ImageNet class, 50 val).

Time model (per unit, then summed): max(compute, memory traffic, host dispatch), where
  compute = matmul FLOPs / (matmul peak x eff) + conv FLOPs / (conv peak x eff),
  traffic = bytes read + written by every non-view op (unfused eager kernels) / (HBM bandwidth x bw-eff),
  host    = dispatched non-view ops x --host-us (eager PyTorch launches kernels one by one).
Peaks assumed (NVIDIA H100 SXM5 datasheet, dense): FP32 67, TF32 494.7, BF16 989.4 TFLOP/s, HBM3 3.35 TB/s.
`--precision default` is how the project runs today: everything float32, so matmuls run at the FP32
peak (torch.backends.cuda.matmul.allow_tf32 is False by default) and convolutions at TF32 (cuDNN's
allow_tf32 is True by default). The efficiencies are assumptions, not measurements.

Memory: weights (float32, as loaded) + activations. Activations with a graph = bytes of the tensors
autograd saves for backward (torch.autograd.graph.saved_tensors_hooks; storages counted once,
parameters excluded); without a graph = the largest single op's inputs + outputs. Both are lower
bounds of what the caching allocator reserves (`torch.cuda.max_memory_allocated` will read higher). One
upward bias: on meta, scaled_dot_product_attention takes PyTorch's math path, whose saved attention
probabilities are ~28 % of a DiT step's saved bytes; the GPU's fused kernel does not keep them (LD3M's
peaks are set by the VAE decoder's graph, not the DiT step).

    python benchmarks/paper_scale_estimate.py                        # ImageNette, conf/paper, ~30 s on 1 CPU thread
    python benchmarks/paper_scale_estimate.py --dataset imagenet-subset --efficiency 0.3
    python benchmarks/paper_scale_estimate.py --precision tf32 --json estimate.json
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
META = torch.device("meta")
LATENT_DIM = 4 * 32 * 32  # DiT-XL/2-256 latents, d of D3HR
FLOAT = 4  # bytes: every tensor of the pipeline is float32

# NVIDIA H100 SXM5 (80 GB HBM3) datasheet, dense (no 2:4 sparsity), FLOP/s and bytes/s.
H100_SXM = {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12, "hbm": 3.35e12, "memory": 80e9}
# matmul-class and conv-class peak per --precision ("default" = the project today: all float32).
PRECISIONS = {"default": ("fp32", "tf32"), "tf32": ("tf32", "tf32"), "bf16": ("bf16", "bf16")}
DATASETS = {  # train images, val (test) images, classes
    "imagenette": (9469, 3925, 10),           # imagenette2 (full size) train / val
    "imagenet-subset": (13000, 500, 10),      # ImageNet-A..E: <= 1,300 train images per class, 50 val
}
EVAL_ARCHS_FALLBACK = ["convnet", "alexnet", "vgg11", "resnet18", "vit"]


# ----------------------------------------------------------------------------- measuring one unit


@dataclass
class Cost:
    """Work of some number of calls: FLOPs by class, bytes moved, dispatched (kernel-launching) ops."""

    matmul_flops: float = 0.0
    conv_flops: float = 0.0
    bytes_moved: float = 0.0
    ops: float = 0.0

    @property
    def flops(self) -> float:
        return self.matmul_flops + self.conv_flops

    def __add__(self, other: Cost) -> Cost:
        return Cost(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)))

    def __mul__(self, times: float) -> Cost:
        return Cost(*(a * times for a in dataclasses.astuple(self)))

    __rmul__ = __mul__


@dataclass
class Unit:
    """One call measured at `batch`: per-sample parts (FLOPs, activation traffic, saved activations, largest
    op) scale with the batch; per-call parts (weight reads, dispatched ops) do not. Exact for these nets,
    whose only batch-dependent shape is the batch dimension."""

    batch: int
    flops_matmul: float
    flops_conv: float
    act_bytes: float
    weight_bytes: float
    ops: int
    saved_bytes: float
    largest_op_bytes: float

    def cost(self, batch: float, calls: float = 1.0) -> Cost:
        """`calls` calls of `batch` samples each."""
        scale = batch / self.batch
        return Cost(self.flops_matmul * scale * calls, self.flops_conv * scale * calls,
                    (self.act_bytes * scale + self.weight_bytes) * calls, self.ops * calls)

    def images(self, count: float, batch: int) -> Cost:
        """Every one of `count` samples once, in calls of at most `batch`."""
        return self.cost(batch, count / batch) if count >= batch else self.cost(count)

    def saved(self, batch: float) -> float:
        return self.saved_bytes * batch / self.batch

    def working(self, batch: float) -> float:
        return self.largest_op_bytes * batch / self.batch

    def activations(self, batch: float) -> float:
        """Peak activation bytes with a graph: everything saved for backward + the largest op on top."""
        return self.saved(batch) + self.working(batch)


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


class _OpTally(TorchDispatchMode):
    """Bytes read + written, largest single op (activations only) and count of every non-view aten op."""

    def __init__(self, weight_storages: set[int]) -> None:
        super().__init__()
        self.weights = weight_storages
        self.act_bytes = self.weight_bytes = self.largest = 0
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view or func in (torch.ops.aten.detach.default, torch.ops.aten.lift_fresh.default):
            return out  # no kernel, no traffic
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        weights = sum(t.nbytes for t in tensors if _storage_key(t) in self.weights)
        acts = sum(t.nbytes for t in tensors) - weights
        self.ops += 1
        self.act_bytes += acts
        self.weight_bytes += weights
        self.largest = max(self.largest, acts)
        return out


def measure(fn: Callable[[], None], batch: int, modules: tuple[torch.nn.Module, ...] = ()) -> Unit:
    """Run `fn` (meta tensors) once under the FLOP counter, the op tally and a saved-tensor hook."""
    weight_storages = {_storage_key(p) for m in modules for p in m.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in weight_storages:
            saved[key] = t.untyped_storage().nbytes()
        return t

    tally = _OpTally(weight_storages)
    with FlopCounterMode(display=False) as counter, tally, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    by_op = counter.get_flop_counts().get("Global", {})
    conv = float(sum(v for op, v in by_op.items() if "convolution" in str(op)))
    return Unit(batch, counter.get_total_flops() - conv, conv, tally.act_bytes, tally.weight_bytes, tally.ops,
                float(sum(saved.values())), float(tally.largest))


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- the paper's models (meta)


# DiT-XL/2 at 256 px as facebook/DiT-XL-2-256's transformer/config.json describes it.
DIT_XL2_CONFIG = {"num_attention_heads": 16, "attention_head_dim": 72, "in_channels": 4, "out_channels": 8,
                  "num_layers": 28, "sample_size": 32, "patch_size": 2, "num_embeds_ada_norm": 1000}
# stabilityai/sd-vae-ft-mse (the DiT VAE): 4 levels 128-256-512-512, 2 res blocks, 4 latent channels.
SD_VAE_CONFIG = {"in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",) * 4,
                 "up_block_types": ("UpDecoderBlock2D",) * 4, "block_out_channels": (128, 256, 512, 512),
                 "layers_per_block": 2, "latent_channels": 4, "sample_size": 256, "scaling_factor": 0.18215}


def build_dit(device: torch.device | str = META, config: dict | None = None) -> torch.nn.Module:
    """DiT-XL/2-256 (`DIT_XL2_CONFIG`, or `config`) on `device`; on meta: shapes only, no weights."""
    from diffusers import DiTTransformer2DModel

    with torch.device(device):
        return DiTTransformer2DModel(**(config or DIT_XL2_CONFIG))


def dit_unique_params(dit: torch.nn.Module) -> int:
    """Parameters of the original DiT: diffusers copies the shared timestep + class embedder into the
    AdaLN-Zero norm of every block (identical weights after conversion), so count one copy."""
    blocks = dit.transformer_blocks
    embedder = param_count(blocks[0].norm1.emb)
    return param_count(dit) - (len(blocks) - 1) * embedder


def build_vae(device: torch.device | str = META, config: dict | None = None) -> torch.nn.Module:
    """The SD VAE (`SD_VAE_CONFIG`, or `config`) on `device`; on meta: shapes only, no weights."""
    from diffusers import AutoencoderKL

    with torch.device(device):
        return AutoencoderKL(**(config or SD_VAE_CONFIG))


def build_eval_net(name: str, image_size: int, num_classes: int) -> torch.nn.Module:
    from diffdistill.nets import build_net

    return build_net(name, 3, num_classes, image_size).to(META)  # built on CPU (seeded), then shapes only


def _labels(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.long, device=META)


def dit_units(dit: torch.nn.Module) -> dict[str, Unit]:
    """Guided DiT step per image (2 forwards: conditional + null class, batched as in `predict_noise`), without
    and with the input-only backward of the frozen transformer (LD3M's pass 2)."""
    dit.requires_grad_(False)
    pair = 2  # one image under classifier-free guidance
    cfg = dit.config
    channels, size, null = int(cfg.in_channels), int(cfg.sample_size), int(cfg.num_embeds_ada_norm)

    def step(grad: bool) -> Callable[[], None]:
        def run() -> None:
            z = torch.empty(pair, channels, size, size, device=META, requires_grad=grad)
            t = torch.full((pair,), 500, device=META)
            out = dit(z, timestep=t, class_labels=torch.tensor([0, null], device=META)).sample
            if grad:
                out[:, :channels].sum().backward()  # learned-sigma channels are dropped
        return run

    return {"dit_guided": measure(step(False), 1, (dit,)), "dit_guided_grad": measure(step(True), 1, (dit,))}


def vae_units(vae: torch.nn.Module, data_size: int) -> dict[str, Unit]:
    """VAE encode / decode of one image at its native size (256 px for the SD VAE) with the prior's resize
    from / to the data size."""
    vae.requires_grad_(False)
    cfg = vae.config
    native, channels = int(cfg.sample_size), int(cfg.in_channels)
    latent_channels, latent_size = int(cfg.latent_channels), native // 2 ** (len(cfg.block_out_channels) - 1)

    def decode(grad: bool) -> Callable[[], None]:
        def run() -> None:
            z = torch.empty(1, latent_channels, latent_size, latent_size, device=META, requires_grad=grad)
            image = F.interpolate(vae.decode(z).sample, size=(data_size,) * 2, mode="bilinear", antialias=True)
            if grad:
                image.sum().backward()
        return run

    def encode() -> None:
        x = torch.empty(1, channels, data_size, data_size, device=META)
        x = F.interpolate(x, size=(native, native), mode="bilinear", antialias=True)
        vae.encode(x).latent_dist.mean  # noqa: B018

    return {"encode": measure(encode, 1, (vae,)), "decode": measure(decode(False), 1, (vae,)),
            "decode_grad": measure(decode(True), 1, (vae,))}


def train_step_unit(net: torch.nn.Module, batch: int, image_size: int) -> Unit:
    """Forward + backward of cross-entropy + a plain SGD update (momentum buffer included)."""
    net.requires_grad_(True)

    def run() -> None:
        loss = F.cross_entropy(net(torch.empty(batch, 3, image_size, image_size, device=META)), _labels(batch))
        loss.backward()
        with torch.no_grad():
            for p in net.parameters():
                p.add_(p.grad, alpha=-0.01)

    return measure(run, batch, (net,))


def forward_unit(net: torch.nn.Module, batch: int, image_size: int) -> Unit:
    def run() -> None:
        with torch.no_grad():
            net(torch.empty(batch, 3, image_size, image_size, device=META))

    return measure(run, batch, (net,))


def dc_units(net: torch.nn.Module, batch_real: int, ipc: int, image_size: int) -> tuple[Unit, Unit]:
    """One class of GradientMatching.loss: real-batch gradient, then the synthetic gradient with
    create_graph and the backward of the layer-wise matching distance (double backward)."""
    from diffdistill.distill.objectives import match_distance

    params = list(net.parameters())
    net.requires_grad_(True)
    grads: list[torch.Tensor] = []

    def real() -> None:
        x = torch.empty(batch_real, 3, image_size, image_size, device=META)
        grads[:] = torch.autograd.grad(F.cross_entropy(net(x), _labels(batch_real)), params)

    def syn() -> None:
        x = torch.empty(ipc, 3, image_size, image_size, device=META, requires_grad=True)
        g = torch.autograd.grad(F.cross_entropy(net(x), _labels(ipc)), params, create_graph=True)
        sum(match_distance(a.detach(), b) for a, b in zip(grads, g, strict=True)).backward()

    return measure(real, batch_real, (net,)), measure(syn, ipc, (net,))


def dm_unit(net: torch.nn.Module, batch_real: int, ipc: int, image_size: int) -> Unit:
    """One class of DistributionMatching.loss (frozen random net): embed real and synthetic, backprop to images."""
    net.requires_grad_(False)

    def run() -> None:
        real = net.features(torch.empty(batch_real, 3, image_size, image_size, device=META))
        syn = net.features(torch.empty(ipc, 3, image_size, image_size, device=META, requires_grad=True))
        (real.mean(0) - syn.mean(0)).square().sum().backward()

    return measure(run, ipc, (net,))


def mtt_unit(net: torch.nn.Module, images: int, steps: int, image_size: int, batch_syn: int | None = None) -> Unit:
    """TrajectoryMatching.loss: `unroll_student` (create_graph) on minibatches of `batch_syn` synthetic
    images (None: the whole set) + backward."""
    from diffdistill.distill.objectives import flatten_parameters, unroll_student

    net.requires_grad_(False)
    start = flatten_parameters(net).detach()

    def run() -> None:
        x = torch.empty(images, 3, image_size, image_size, device=META, requires_grad=True)
        lr = torch.tensor(0.01, device=META, requires_grad=True)
        final = unroll_student(net, start, x, _labels(images), syn_lr=lr, syn_steps=steps, batch_syn=batch_syn or images,
                               augment=None, generator=torch.Generator().manual_seed(0))
        (final - start).square().sum().backward()

    return measure(run, images, (net,))


def scaled_steps(one: Unit, two: Unit, steps: int) -> Unit:
    """A loop measured at 1 and 2 iterations, extrapolated linearly to `steps` (every iteration is the same ops)."""
    def at(a: float, b: float) -> float:
        return a + (b - a) * (steps - 1)

    fields = ("flops_matmul", "flops_conv", "act_bytes", "weight_bytes", "ops", "saved_bytes")
    values = {f: at(getattr(one, f), getattr(two, f)) for f in fields}
    return Unit(one.batch, largest_op_bytes=two.largest_op_bytes, **values)


# ----------------------------------------------------------------------------- the GPU model


@dataclass
class Gpu:
    name: str
    matmul_peak: float
    conv_peak: float
    bandwidth: float
    memory: float
    efficiency: float
    bw_efficiency: float
    host_s: float  # host time per dispatched op (eager launch overhead)

    def seconds(self, cost: Cost) -> float:
        compute = (cost.matmul_flops / self.matmul_peak + cost.conv_flops / self.conv_peak) / self.efficiency
        traffic = cost.bytes_moved / (self.bandwidth * self.bw_efficiency)
        return max(compute, traffic, cost.ops * self.host_s)


def make_gpu(args: argparse.Namespace, precision: str | None = None) -> Gpu:
    precision = precision or args.precision
    matmul, conv = PRECISIONS[precision]
    name = "H100 SXM5" if precision == args.precision else f"--precision {precision}"
    return Gpu(name, H100_SXM[matmul], H100_SXM[conv], H100_SXM["hbm"], H100_SXM["memory"],
               args.efficiency, args.bw_efficiency, args.host_us * 1e-6)


# ----------------------------------------------------------------------------- phases of conf/<env>


@dataclass
class Phase:
    name: str
    work: list[tuple[str, Cost]]  # (what, cost): time is taken per item (each has its own bound)
    memory: float  # peak GPU bytes
    disk: float  # bytes of the phase's artifacts (one version)
    note: str = ""

    def flops(self) -> float:
        return sum(c.flops for _, c in self.work)

    def seconds(self, gpu: Gpu) -> float:
        return sum(gpu.seconds(c) for _, c in self.work)


def load_params(env: str, overrides: list[str] = ()) -> dict:
    """conf/base merged with conf/<env> exactly as `kedro run --env <env>` merges them, then `KEY=VALUE`
    overrides with dotted keys (like `kedro run --params`)."""
    import yaml
    from kedro.config import OmegaConfigLoader

    from diffdistill.settings import CONFIG_LOADER_ARGS

    args = {k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"}
    params = OmegaConfigLoader(conf_source=str(ROOT / "conf"), env=env, **args)["parameters"]
    for item in overrides:
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"--set {item!r}: {part!r} is not a parameter group of conf/{env}")
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    return params


def _loops_dc(ipc: int, dc: dict) -> tuple[int, int]:
    from diffdistill.distill.objectives import DCConfig

    return DCConfig(outer_loop=dc.get("outer_loop"), inner_loop=dc.get("inner_loop")).loops(ipc)


def _score_chunk(k: int, n: int, sigma: torch.Tensor) -> None:
    """Score k candidate groups of n members as `d3hr._best_group` does on a GPU (per chunk)."""
    from diffdistill.distill.d3hr import _power_sums, _terms_from_sums

    _terms_from_sums(*_power_sums(torch.empty(k, n, LATENT_DIM, device=META)), n, sigma)


def _iterations(iters, ipc: int) -> int:
    return int(iters[ipc] if isinstance(iters, dict) else iters)


class Estimator:
    """Builds the units once and turns parameters + dataset sizes into phases."""

    def __init__(self, params: dict, dataset: str, image_size: int | None = None) -> None:
        self.p = params
        self.train, self.test, self.classes = DATASETS[dataset]
        self.size = image_size or int(params["preprocess"]["image_size"])
        self.ipcs = [int(i) for i in params["ipcs"]]
        self.dit, self.vae = build_dit(), build_vae()
        self.prior = {**dit_units(self.dit), **vae_units(self.vae, self.size)}
        self.prior_weights = (param_count(self.dit) + param_count(self.vae)) * FLOAT
        self.archs = list(params["evaluate"].get("archs", EVAL_ARCHS_FALLBACK))
        self.nets = {a: build_eval_net(a, self.size, self.classes) for a in {*self.archs, "convnet", "resnet18"}}
        self.train_steps = {a: train_step_unit(n, 256, self.size) for a, n in self.nets.items()}
        self.forwards = {a: forward_unit(n, 256, self.size) for a, n in self.nets.items()}
        self._objectives: dict[tuple[str, int], tuple[Cost, float, Cost, int]] = {}

    # --- building blocks
    def image_bytes(self, n: int) -> float:
        return n * 3 * self.size * self.size  # uint8

    def net_weights(self, arch: str) -> float:
        return param_count(self.nets[arch]) * FLOAT * 3  # weights, grads, momentum

    def guided_steps(self, images: int, steps: int, batch: int, grad: bool = False) -> Cost:
        unit = self.prior["dit_guided_grad" if grad else "dit_guided"]
        return unit.images(images, batch) * steps

    def training(self, arch: str, images: int, batch: int, epochs: int) -> Cost:
        steps_per_epoch = math.ceil(images / batch)
        return self.train_steps[arch].cost(images / steps_per_epoch, steps_per_epoch * epochs)

    def prior_memory(self, dit_batch: int, vae_batch: int) -> float:
        working = max(self.prior["dit_guided"].working(dit_batch), self.prior["encode"].working(vae_batch),
                      self.prior["decode"].working(vae_batch))
        return self.prior_weights + working

    # --- phases
    def preprocess(self) -> Phase:
        return Phase("preprocess", [], 0.0, self.image_bytes(self.train + self.test),
                     "CPU: JPEG decode + resize; no GPU work")

    def prior_phase(self) -> Phase:
        q = self.p["prior"]["quality"]
        samples = int(q["samples_per_class"]) * self.classes
        test = min(int(q["max_test_images"]), self.test)
        fidelity_batch = min(samples, 500)  # prior.train.class_fidelity's batch; reconstruction_psnr's is 256
        work = [("class-fidelity samples", self.guided_steps(samples, int(q["num_steps"]), fidelity_batch)
                 + self.prior["decode"].images(samples, fidelity_batch)),
                ("VAE round trip", self.prior["encode"].images(test, 256) + self.prior["decode"].images(test, 256)),
                ("judge", self.forwards[self.p["teacher"]["arch"]].images(samples, 256))]
        memory = self.prior_memory(2 * fidelity_batch, max(fidelity_batch, min(test, 256)))
        return Phase("prior (dit_folder)", work, memory, self.prior_weights,
                     f"loads + re-saves the DiT folder; {samples} samples x {q['num_steps']} steps")

    def teacher(self) -> Phase:
        t = self.p["teacher"]
        over = t.get("protocol_overrides", {})
        arch, epochs, batch = t["arch"], int(over.get("epochs", 1000)), int(over.get("batch_size", 256))
        work = [("train", self.training(arch, self.train, batch, epochs)),
                ("validate", self.forwards[arch].images(self.test, 256) * 10)]
        memory = self.net_weights(arch) + self.train_steps[arch].activations(batch) + self.image_bytes(self.train)
        return Phase(f"teacher ({arch})", work, memory, param_count(self.nets[arch]) * FLOAT)

    def latents(self) -> Phase:
        lt = self.p["latents"]
        steps, batch = int(lt["invert_steps"]), int(lt["batch_size"])
        guided = float(lt["invert_guidance"]) != 1.0
        inversion = self.guided_steps(self.train, steps, batch) * (1.0 if guided else 0.5)
        trips = int(lt["round_trip_images"])
        work = [("VAE encode", self.prior["encode"].images(self.train, batch)),
                (f"DDIM inversion ({steps} steps)", inversion),
                ("round-trip report", self.guided_steps(trips, steps, batch) + self.prior["decode"].images(trips, batch)
                 + self.prior["encode"].images(trips, batch) + self.prior["decode"].images(trips, batch))]
        disk = 2 * self.train * LATENT_DIM * FLOAT  # latents + noise
        return Phase("latents", work, self.prior_memory(2 * batch, batch), disk,
                     f"{self.train} images x {steps} steps x {2 if guided else 1} DiT passes")

    def gaussians(self) -> Phase:
        # per-class float64 moments of latents and noise: a few passes over 2 x N x d floats
        data = 2 * self.train * LATENT_DIM * FLOAT
        work = [("moments (float64)", Cost(bytes_moved=data * 2 * 4, ops=self.classes * 200))]
        disk = self.classes * (2 * LATENT_DIM * 8 + 336_000)
        return Phase("gaussians", work, data * 2, disk, "float64 moments: elementwise only, bandwidth-bound")

    def group_sampling_streams(self) -> list[tuple[int, tuple[int, ...]]]:
        """(candidates drawn, member shape) per stream and class: the paper sampler per IPC, and the
        factorised sampler's mean / std / residual streams when it runs side by side."""
        d3 = self.p["d3hr"]
        m = int(d3["group_sampling"]["m"])
        streams = []
        for ipc in self.ipcs:
            streams.append((m, (ipc, LATENT_DIM)))
            if d3.get("factorised_side_by_side", False):
                streams.append((m, (LATENT_DIM,)))
                if ipc >= 2:
                    streams += [(m, (ipc - 1, LATENT_DIM)), (m if ipc >= 3 else 1, (ipc, LATENT_DIM))]
        return streams

    def group_sampling(self) -> Cost:
        """Per candidate: one seeded `normal_` launch (its own stream: `_best_candidate`), then per chunk the
        power sums and the loss (`_power_sums` + `_terms_from_sums`, counted on meta). RNG + bandwidth bound."""
        chunk = int(self.p["d3hr"]["group_sampling"]["chunk_size"])
        sigma = torch.empty(LATENT_DIM, device=META)
        total = Cost()
        for count, shape in self.group_sampling_streams():
            n, k = (shape[0] if len(shape) == 2 else 1), min(chunk, count)
            unit = measure(functools.partial(_score_chunk, k, n, sigma), k)
            draws = Cost(bytes_moved=count * math.prod(shape) * FLOAT, ops=count * 2)  # normal_ + seeding per candidate
            total = total + (draws + unit.images(count, k)) * self.classes
        return total

    def d3hr(self) -> Phase:
        d3, lt = self.p["d3hr"], self.p["latents"]
        gen = d3["generation"]
        batch, steps = int(gen["batch_size"]), int(lt["invert_steps"])
        variants = 2 if d3.get("factorised_side_by_side", False) else 1
        images = sum(self.ipcs) * self.classes * variants
        guided = float(gen["guidance"]) != 1.0
        work = [("group sampling", self.group_sampling()),
                ("generation", self.guided_steps(images, steps, batch) * (1.0 if guided else 0.5)
                 + self.prior["decode"].images(images, batch))]
        if gen.get("soft_labels"):
            work.append(("soft labels", self.forwards[self.p["teacher"]["arch"]].images(images, 256)))
        chunk = int(d3["group_sampling"]["chunk_size"])
        sampling_mem = chunk * max(self.ipcs) * LATENT_DIM * FLOAT * 2 + 3 * chunk * LATENT_DIM * FLOAT
        memory = max(self.prior_memory(2 * batch, batch), sampling_mem)
        disk = images * (LATENT_DIM * FLOAT + 3 * self.size * self.size)
        return Phase("d3hr", work, memory, disk, f"m = {d3['group_sampling']['m']}; {images} images generated")

    def experts(self) -> Phase:
        e = self.p["experts"]
        count, epochs, batch, arch = int(e["num_experts"]), int(e["epochs"]), int(e["batch_size"]), e["net"]
        work = [("train experts", self.training(arch, self.train, batch, epochs) * count)]
        memory = self.net_weights(arch) + self.train_steps[arch].activations(batch) + self.image_bytes(self.train)
        disk = count * (epochs + 1) * param_count(self.nets[arch]) * FLOAT
        return Phase(f"experts ({count} x {epochs} ep)", work, memory, disk, "DSA not counted")

    def objective_units(self, objective: str, ipc: int) -> tuple[Cost, float, Cost, int]:
        """One round of the objective's loss for a set of `ipc` images per class: (cost, saved activations,
        work between rounds, rounds per iteration). Cached: every space of an objective shares it."""
        key = (objective, ipc)
        if key not in self._objectives:
            cfg = self.p["ld3m"][objective]
            net, n_syn = self.nets[cfg["net"]], ipc * self.classes
            rounds, between = 1, Cost()
            if objective == "dc":
                rounds, inner = _loops_dc(ipc, cfg)
                real, syn = dc_units(net, int(cfg["batch_real"]), ipc, self.size)
                loss = (real.cost(real.batch) + syn.cost(ipc)) * self.classes
                # every class's synthetic graph lives until the backward; real graphs one at a time
                saved = real.activations(real.batch) + syn.saved(ipc) * self.classes
                between = self.train_steps[cfg["net"]].images(n_syn, int(cfg["batch_train"])) * inner
            elif objective == "dm":
                unit = dm_unit(net, int(cfg["batch_real"]), ipc, self.size)
                loss, saved = unit.cost(ipc) * self.classes, unit.activations(ipc)
            else:
                batch_syn = min(int(cfg.get("batch_syn") or n_syn), n_syn)
                one, two = (mtt_unit(net, n_syn, k, self.size, batch_syn) for k in (1, 2))
                unit = scaled_steps(one, two, int(cfg["syn_steps"]))
                loss, saved = unit.cost(n_syn), unit.activations(n_syn)
            self._objectives[key] = (loss, saved, between, rounds)
        return self._objectives[key]

    def generation_round(self, space: str, n_syn: int, chunk: int) -> tuple[Cost, float]:
        """Pass 1 (no graph) + pass 2 (replay: recompute each step with a graph, input-only backward) of the
        residual sampler and the decoder over the synthetic set, chunk by chunk: (cost, peak memory)."""
        if space == "pixel":
            return Cost(), 0.0
        sampler = self.p["ld3m"]["sampler"]
        cost = self.prior["decode"].images(n_syn, chunk) + self.prior["decode_grad"].images(n_syn, chunk)
        live = self.prior["decode_grad"].activations(chunk)
        if space != "decoder_only":
            steps, share = int(sampler["num_steps"]), 1.0 if float(sampler["guidance"]) != 1.0 else 0.5
            cost = cost + (self.guided_steps(n_syn, steps, chunk)
                           + self.guided_steps(n_syn, steps, chunk, grad=True)) * share
            live = max(live, self.prior["dit_guided_grad"].activations(chunk))  # one replayed step at a time
        return cost, self.prior_weights + live

    def ld3m_sets(self) -> list[tuple[str, Cost, float, float, int]]:
        """(set, cost, peak memory, disk, iterations) per distilled set of `ld3m.runs` x `ipcs`."""
        ld, rows = self.p["ld3m"], []
        for run in ld["runs"]:
            objective, space = run["objective"], run["space"]
            for ipc in self.ipcs:
                n_syn, steps = ipc * self.classes, int(ld["sampler"]["num_steps"])
                chunk = min(int(ld["sampler"]["chunk_size"]), ipc)  # chunks never straddle two classes
                iterations = _iterations(ld["iterations"][objective], ipc)
                generate, gen_memory = self.generation_round(space, n_syn, chunk)
                loss, saved, between, rounds = self.objective_units(objective, ipc)
                cost = ((generate + loss) * rounds + between * (rounds - 1)) * iterations
                weights = self.prior_weights if space != "pixel" else 0.0
                state = 4 * n_syn * LATENT_DIM * FLOAT * (steps + 1)  # Z, c, momentum, recorded trajectories
                memory = max(gen_memory, weights + saved) + state
                disk = n_syn * 3 * self.size * self.size + 3 * n_syn * LATENT_DIM * FLOAT
                rows.append((f"{objective}_{space}_ipc{ipc}", cost, memory, disk, iterations))
        return rows

    def ld3m(self) -> Phase:
        sets = self.ld3m_sets()
        ld = self.p["ld3m"]
        return Phase(f"ld3m ({len(ld['runs'])} runs x {len(self.ipcs)} IPCs)", [(s[0], s[1]) for s in sets],
                     max(s[2] for s in sets), sum(s[3] for s in sets),
                     f"iterations {dict(ld['iterations'])}, T = {ld['sampler']['num_steps']}")

    def evaluate(self) -> Phase:
        ev = self.p["evaluate"]
        over, seeds = ev.get("protocol_overrides", {}), len(ev["seeds"])
        epochs, batch = int(over.get("epochs", 1000)), int(over.get("batch_size", 256))
        sets = len(ev["methods"]) + len(self.p["ld3m"]["runs"])
        work = []
        for ipc in self.ipcs:
            n = ipc * self.classes
            for arch in self.archs:
                cost = (self.training(arch, n, min(batch, n), epochs)
                        + self.forwards[arch].images(self.test, 512) * 10) * (seeds * sets)
                work.append((f"{arch} ipc{ipc}", cost))
        full = ev["full_data"]
        f_over = full.get("protocol_overrides", {})
        f_epochs, f_batch = int(f_over.get("epochs", 1000)), int(f_over.get("batch_size", 256))
        for arch in self.archs:
            cost = (self.training(arch, self.train, f_batch, f_epochs)
                    + self.forwards[arch].images(self.test, 512) * 10) * len(full["seeds"])
            work.append((f"{arch} full data", cost))
        memory = max(self.net_weights(a) + self.train_steps[a].activations(batch) for a in self.archs)
        memory += self.image_bytes(self.train + self.test)  # the full-data run keeps the split on the device
        return Phase(f"evaluate ({sets} sets x {len(self.ipcs)} IPCs)", work, memory, 0.0,
                     f"{len(self.archs)} archs x {seeds} seeds x {epochs} epochs; full data "
                     f"{len(full['seeds'])} seeds x {f_epochs} epochs; DSA not counted")

    def phases(self) -> list[Phase]:
        return [self.preprocess(), self.prior_phase(), self.teacher(), self.latents(), self.gaussians(), self.d3hr(),
                self.experts(), self.ld3m(), self.evaluate()]


# ----------------------------------------------------------------------------- output


def human_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def human_seconds(s: float) -> str:
    if s >= 86400:
        return f"{s / 86400:.3g} d"
    if s >= 3600:
        return f"{s / 3600:.3g} h"
    if s >= 60:
        return f"{s / 60:.3g} min"
    return f"{s:.3g} s"


def markdown_table(phases: list[Phase], gpu: Gpu, alt: Gpu) -> str:
    lines = [f"| phase | FLOPs | time on 1 H100 | with {alt.name} | peak GPU memory | disk | note |",
             "|---|---|---|---|---|---|---|"]
    for ph in phases:
        flops = f"{ph.flops():.3g}" if ph.work else "–"
        times = [human_seconds(ph.seconds(g)) if ph.work else "(CPU)" for g in (gpu, alt)]
        memory = human_bytes(ph.memory) if ph.memory else "–"
        lines.append(f"| {ph.name} | {flops} | {times[0]} | {times[1]} | {memory} | "
                     f"{human_bytes(ph.disk) if ph.disk else '–'} | {ph.note} |")
    totals = [human_seconds(sum(ph.seconds(g) for ph in phases)) for g in (gpu, alt)]
    lines.append(f"| **total** | {sum(ph.flops() for ph in phases):.3g} | {totals[0]} | {totals[1]} | | "
                 f"{human_bytes(sum(ph.disk for ph in phases))} | |")
    return "\n".join(lines)


def ld3m_table(est: Estimator, gpu: Gpu) -> str:
    lines = ["| LD3M set | FLOPs | time | per iteration | peak GPU memory |", "|---|---|---|---|---|"]
    for name, cost, memory, _disk, iterations in est.ld3m_sets():
        seconds = gpu.seconds(cost)
        flag = " (> 80 GB)" if memory > gpu.memory else ""
        lines.append(f"| {name} | {cost.flops:.3g} | {human_seconds(seconds)} | {human_seconds(seconds / iterations)} "
                     f"| {human_bytes(memory)}{flag} |")
    return "\n".join(lines)


def unit_summary(est: Estimator) -> list[str]:
    u = est.prior
    lines = [f"DiT-XL/2-256: {param_count(est.dit) / 1e6:.1f} M stored parameters "
             f"({dit_unique_params(est.dit) / 1e6:.1f} M unique: diffusers repeats the timestep/class embedder in "
             f"each of the 28 blocks); SD VAE: {param_count(est.vae) / 1e6:.1f} M",
             f"  DiT forward, 1 image: {u['dit_guided'].cost(1).flops / 2e9:.1f} GFLOP "
             f"(guided = 2 forwards: {u['dit_guided'].cost(1).flops / 1e9:.1f}; + input backward: "
             f"{u['dit_guided_grad'].cost(1).flops / 1e9:.1f})",
             f"  VAE encode 256 px: {u['encode'].cost(1).flops / 1e9:.1f} GFLOP; decode: "
             f"{u['decode'].cost(1).flops / 1e9:.1f}; decode + input backward: {u['decode_grad'].cost(1).flops / 1e9:.1f}",
             f"  saved for backward per image: guided DiT step {human_bytes(u['dit_guided_grad'].saved(1))}, "
             f"decode {human_bytes(u['decode_grad'].saved(1))}",
             f"Evaluation nets at {est.size} px, one training step at batch 256 (fwd + bwd + SGD):"]
    for arch in sorted(est.nets):
        s = est.train_steps[arch]
        lines.append(f"  {arch:9s} {param_count(est.nets[arch]) / 1e6:6.2f} M params  {s.cost(256).flops / 1e12:7.2f} "
                     f"TFLOP  saved activations {human_bytes(s.saved(256))}  ops {s.ops}")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="paper", help="Kedro environment merged over conf/base (default paper)")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="imagenette")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="default",
                        help="default: float32 as the project runs (matmul FP32, conv TF32)")
    parser.add_argument("--compare", choices=sorted(PRECISIONS), default="tf32",
                        help="precision of the second time column (tf32: matmuls on tensor cores too)")
    parser.add_argument("--efficiency", type=float, default=0.4, help="sustained fraction of the FLOP peak")
    parser.add_argument("--bw-efficiency", type=float, default=0.7, help="sustained fraction of HBM bandwidth")
    parser.add_argument("--host-us", type=float, default=10.0, help="host time per dispatched op (µs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter, e.g. --set ld3m.mtt.batch_syn=50 (value read as YAML)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    for item in args.set:
        if "=" not in item or not item.split("=", 1)[0]:
            parser.error(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. ld3m.mtt.batch_syn=50")
    for name in ("efficiency", "bw_efficiency"):
        if not 0.0 < getattr(args, name) <= 1.0:
            parser.error(f"--{name.replace('_', '-')} must be in (0, 1]")
    if args.host_us < 0:
        parser.error("--host-us must be >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    gpu, alt = make_gpu(args), make_gpu(args, args.compare)
    est = Estimator(load_params(args.env, args.set), args.dataset)
    phases = est.phases()
    matmul, conv = PRECISIONS[args.precision]
    print(f"conf/{args.env} on {args.dataset} ({est.train} train / {est.test} val images, {est.size} px), "
          f"IPCs {est.ipcs}")
    print(f"GPU model: {gpu.name}, matmul at {matmul.upper()} {gpu.matmul_peak / 1e12:.1f} TFLOP/s, conv at "
          f"{conv.upper()} {gpu.conv_peak / 1e12:.1f} TFLOP/s, x {args.efficiency:.0%} sustained (assumed); "
          f"HBM {gpu.bandwidth / 1e12:.2f} TB/s x {args.bw_efficiency:.0%}; {args.host_us:g} µs host per op\n")
    print("\n".join(unit_summary(est)) + "\n")
    print(markdown_table(phases, gpu, alt) + "\n")
    print(ld3m_table(est, gpu))
    if args.json:
        rows = [{"phase": ph.name, "flops": ph.flops(), "seconds": ph.seconds(gpu), "peak_memory_bytes": ph.memory,
                 "disk_bytes": ph.disk, "note": ph.note} for ph in phases]
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "phases": rows}, indent=1))


if __name__ == "__main__":
    main()
