"""GPU check (issue #14): one command that replaces the paper-scale assumptions with measurements.

Sections, each printed next to the figure it replaces (assumed / computed by paper_scale_estimate.py)
or the published one:
  environment     torch / CUDA / GPU, dependencies (diffusers is carried as a wheel on the device machine),
                  no kedro / mlflow / kornia loaded, matmul ceilings (fp32, TF32, bf16) and copy bandwidth
  cuda_tests      the core tests with a CUDA variant, run by pytest on CUDA; same params => same result on
                  CUDA; CPU vs CUDA agreement of one LD3M iteration (DM, latent space, sampler "reference")
                  and one D3HR class, each within a stated tolerance
  dit_throughput  DiT-XL/2-256 (published config, random weights, 4x32x32 latents) forward throughput in
                  fp32 (PyTorch default), TF32 and bf16 autocast -> the --efficiency for paper_scale_estimate.py
                  (assumed 40 %); batch-1 latency -> host time per op (assumed 10 us); SD-VAE decode (convs)
  ld3m_memory     LD3M generator side (DiT-XL/2 + SD VAE, 128-px data, guidance 3, variant "reference")
                  peak memory and time per iteration at T = 2, 10, 20: two-pass "replay" (default),
                  "checkpoint" and plain autograd (goal mem(T=20) / mem(T=2) <= 1.3; LD3M: 29.4 GB at T=20
                  on an A100, GLaD 31.2 GB)
  d3hr_sampling   D3HR group sampling, d = 4096, IPC 10, m = 1e5 per class: s/class, ratio to the GPU's own
                  RNG limit, peak memory (reference: 2.6 s/class on an A6000 at m = 1e6)
  eval_loop       diffdistill.evaluation.fit vs a DataLoader loop on the GPU (goal >= 1.5x at equal precision)
  pixel_dm        (optional) pixel-space DM at CIFAR-10 shape, IPC 10: seconds per iteration

Every section runs in a worker process under a time budget; a section that raises, crashes the worker or
outruns its hard limit is recorded as such and the others still run (a fresh worker takes over). A global
deadline (--deadline-s, default 420 s) skips optional sections that no longer fit and any section once it
has passed. The report (gpu_check.json + gpu_check.md, plus the worker log) is rewritten after every
section in --out (default: $OUT, else benchmarks/results/gpu_check/<UTC time>), so a run killed from
outside still leaves what it measured.

    python benchmarks/gpu_check.py                    # on a CUDA machine, <= 7 min on one H200
    python benchmarks/gpu_check.py --smoke --out /tmp/gc   # tiny CPU mode (CI): every section, ~20 s on 1 thread
    python benchmarks/gpu_check.py --smoke --device cuda   # tiny sizes on the GPU (a quick first look)

Only the algorithm layers (src/diffdistill/{data,nets,augment,diffusion,prior,distill,evaluation}) and
the benchmarks are imported; they need torch, torchvision, numpy, pillow, safetensors, huggingface_hub and
diffusers (see README, "GPU check on a lent machine", for the wheels to carry). Nothing is downloaded;
all weights are random, drawn from explicit torch.Generators.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SRC = ROOT / "src"
REPORT_JSON, REPORT_MD, LOG_FILE, EVENTS_FILE = "gpu_check.json", "gpu_check.md", "gpu_check.log", "gpu_check_events.jsonl"
FORBIDDEN_MODULES = ("kedro", "kedro_datasets", "kedro_mlflow", "kedro_viz", "kedro_telemetry", "mlflow", "kornia")
DEPENDENCIES = {  # import name -> (distribution, why)
    "diffusers": ("diffusers", "DiT / VAE model classes of the prior (carry its wheel on the device machine)"),
    "safetensors": ("safetensors", "prior and LD3M checkpoints"),
    "huggingface_hub": ("huggingface_hub", "imported by diffusers"),
    "numpy": ("numpy", "data layer"),
    "PIL": ("pillow", "data layer (images)"),
    "torchvision": ("torchvision", "ResNet blocks, image grids"),
    "pytest": ("pytest", "the core tests with a CUDA variant"),
}
WHEEL_HINT = ("carry the wheel: `python -m pip download --no-deps -d build/wheels diffusers==0.42.1` here, "
              "`carry: [\"build/wheels\"]` and `pip install --no-index --no-deps --target /tmp/site build/wheels/*.whl` "
              "there (README, 'GPU check on a lent machine')")

# Published figures (the papers / reference code) and this project's goals.
LD3M_PUBLISHED_GB = {"LD3M": 29.4, "GLaD": 31.2}  # peak at T = 20 on an A100 (LD3M paper)
D3HR_REFERENCE = {"seconds_per_class": 2.6, "m": 1_000_000, "gpu": "A6000"}  # D3HR reference code
GOAL_LD3M_MEMORY_RATIO = 1.3
GOAL_EVAL_SPEEDUP = 1.5
GOAL_RNG_RATIO = 1.5  # bench_group_sampling.py's goal for the paper sampler (set on CPU)
H200_HBM_BYTES_PER_S = 4.8e12  # datasheet; the compute peaks are the H100's (paper_scale_estimate.H100_SXM)
PRECISION_TO_ESTIMATE = {"fp32": "default", "tf32": "tf32", "bf16": "bf16"}  # --precision of paper_scale_estimate


# ----------------------------------------------------------------------------- sections and sizes


@dataclasses.dataclass(frozen=True)
class Section:
    name: str
    title: str
    budget_s: float  # full (GPU) profile
    smoke_budget_s: float
    optional: bool = False


SECTIONS = (
    Section("environment", "Environment, dependencies, ceilings", 25, 30),
    Section("cuda_tests", "Core tests on CUDA; CPU vs CUDA agreement", 70, 40),
    Section("dit_throughput", "DiT forward throughput (fp32 / TF32 / bf16), VAE decode", 60, 30),
    Section("ld3m_memory", "LD3M peak memory and time per iteration vs T", 150, 40),
    Section("d3hr_sampling", "D3HR group sampling per class", 45, 30),
    Section("eval_loop", "Evaluation loop vs DataLoader loop", 45, 30),
    Section("pixel_dm", "Pixel-space DM at CIFAR-10 shape (optional)", 25, 20, optional=True),
)
SECTION_BY_NAME = {s.name: s for s in SECTIONS}


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    deadline_s: float
    matmul_n: int
    copy_bytes: int
    # cuda_tests
    check_dim: int
    check_ipc: int
    check_m: int
    check_chunk: int
    # models
    dit: dict[str, Any] | None  # None: paper_scale_estimate.DIT_XL2_CONFIG
    vae: dict[str, Any] | None  # None: paper_scale_estimate.SD_VAE_CONFIG
    data_size: int  # LD3M data side (128 px through the 256-px prior in conf/paper)
    dit_batches: tuple[int, ...]
    vae_batch: int
    # ld3m
    ld3m_images: int
    ld3m_chunk: int
    ld3m_steps: tuple[int, ...]
    ld3m_iterations: int
    # d3hr
    d3hr_dim: int
    d3hr_ipc: int
    d3hr_m: int
    d3hr_chunks: tuple[int, ...]
    d3hr_big_m: int
    # eval
    eval_n: int
    eval_size: int
    eval_classes: int
    eval_epochs: int
    eval_batch: int
    eval_width: int
    eval_repeats: int
    # pixel dm
    dm_classes: int
    dm_per_class: int
    dm_size: int
    dm_ipc: int
    dm_iterations: int
    dm_batch_real: int


TINY_DIT = {"num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 4, "out_channels": 8, "num_layers": 2,
            "sample_size": 8, "patch_size": 2, "num_embeds_ada_norm": 10}
TINY_VAE = {"in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",) * 2,
            "up_block_types": ("UpDecoderBlock2D",) * 2, "block_out_channels": (16, 16), "layers_per_block": 1,
            "latent_channels": 4, "norm_num_groups": 8, "sample_size": 16, "scaling_factor": 0.18215}

FULL = Profile(
    name="full", deadline_s=420, matmul_n=8192, copy_bytes=2 << 30,
    check_dim=4096, check_ipc=10, check_m=2000, check_chunk=256,
    dit=None, vae=None, data_size=128, dit_batches=(32, 128), vae_batch=8,
    ld3m_images=10, ld3m_chunk=10, ld3m_steps=(2, 10, 20), ld3m_iterations=2,
    d3hr_dim=4096, d3hr_ipc=10, d3hr_m=100_000, d3hr_chunks=(256, 1024), d3hr_big_m=1_000_000,
    eval_n=20_000, eval_size=32, eval_classes=10, eval_epochs=2, eval_batch=256, eval_width=128, eval_repeats=2,
    dm_classes=10, dm_per_class=300, dm_size=32, dm_ipc=10, dm_iterations=20, dm_batch_real=256,
)
SMOKE = Profile(
    name="smoke", deadline_s=240, matmul_n=128, copy_bytes=8 << 20,
    check_dim=64, check_ipc=4, check_m=40, check_chunk=16,
    dit=TINY_DIT, vae=TINY_VAE, data_size=8, dit_batches=(2,), vae_batch=2,
    ld3m_images=4, ld3m_chunk=2, ld3m_steps=(2, 3, 4), ld3m_iterations=1,
    d3hr_dim=64, d3hr_ipc=4, d3hr_m=200, d3hr_chunks=(16, 64), d3hr_big_m=2000,
    eval_n=64, eval_size=16, eval_classes=4, eval_epochs=1, eval_batch=32, eval_width=8, eval_repeats=1,
    dm_classes=4, dm_per_class=12, dm_size=16, dm_ipc=2, dm_iterations=2, dm_batch_real=8,
)


def section_budget(section: Section, smoke: bool) -> float:
    return section.smoke_budget_s if smoke else section.budget_s


def skip_reason(section: Section, left_s: float, budget_s: float) -> str | None:
    """Why a section must not start with `left_s` seconds to the global deadline (None: it may)."""
    if left_s <= 0:
        return f"global deadline passed ({-left_s:.0f} s ago)"
    if section.optional and left_s < budget_s:
        return f"optional, and only {left_s:.0f} s left before the global deadline (budget {budget_s:.0f} s)"
    return None


class MissingDependency(RuntimeError):
    pass


# ----------------------------------------------------------------------------- small helpers (worker side)


class Out:
    """What a section reports: results (free-form), comparisons with the figure each replaces, checks, notes."""

    def __init__(self) -> None:
        self.results: dict[str, Any] = {}
        self.comparisons: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def compare(self, quantity: str, measured: Any, unit: str, reference: Any = None, kind: str = "",
                source: str = "") -> None:
        """`kind`: assumed (a guess in the estimate), computed (paper_scale_estimate's model), published, goal."""
        self.comparisons.append({"quantity": quantity, "measured": measured, "unit": unit, "reference": reference,
                                 "kind": kind, "source": source})

    def check(self, name: str, value: Any, limit: str, passed: bool | None) -> None:
        """`passed` None: not applicable here (e.g. a GPU-only goal in the CPU smoke mode)."""
        self.checks.append({"name": name, "value": value, "limit": limit,
                            "passed": None if passed is None else bool(passed)})

    def note(self, text: str) -> None:
        self.notes.append(text)

    def as_dict(self) -> dict[str, Any]:
        return {"results": self.results, "comparisons": self.comparisons, "checks": self.checks, "notes": self.notes}


class Ctx:
    """One section's view: the profile, the device, and its own budget."""

    def __init__(self, args: argparse.Namespace, profile: Profile, budget_s: float) -> None:
        import torch

        if args.threads and torch.get_num_threads() != args.threads:
            torch.set_num_threads(args.threads)  # here, not at worker start: torch loads with the first section
        self.args, self.p, self.smoke = args, profile, args.smoke
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.budget_s, self.started = budget_s, time.monotonic()

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)


def _bench(name: str):
    """A module of benchmarks/ (not a package) by name."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    import importlib

    return importlib.import_module(name)


def _require(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        dist, why = DEPENDENCIES.get(module, (module, ""))
        hint = WHEEL_HINT if module == "diffusers" else f"carry a {dist} wheel"
        raise MissingDependency(f"{dist} is not installed ({why}): {hint}")


def _timed(fn: Callable[[], Any], sync: Callable[[], None], *, warmup: int = 1, min_reps: int = 3,
           min_s: float = 0.3, max_reps: int = 30, limit_s: float | None = None) -> dict[str, float]:
    for _ in range(warmup):
        fn()
        sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if (len(times) >= min_reps and elapsed >= min_s) or (limit_s is not None and elapsed >= limit_s):
            break
    return {"best_s": min(times), "median_s": statistics.median(times), "reps": len(times)}


@contextlib.contextmanager
def precision(mode: str):
    """Float32 arithmetic for a block. `strict`: no TF32 anywhere; `fp32`: PyTorch's defaults (matmuls fp32,
    cuDNN convolutions TF32: the estimate's `--precision default`); `tf32`: matmuls TF32 too (conf/paper's
    float32_matmul_precision: high); `bf16`: as tf32 (autocast is the caller's)."""
    import torch

    saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    matmul = {"strict": "highest", "fp32": "highest", "tf32": "high", "bf16": "high"}[mode]
    torch.set_float32_matmul_precision(matmul)
    torch.backends.cudnn.allow_tf32 = mode != "strict"
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]


def _autocast(ctx: Ctx, mode: str):
    import torch

    if mode == "bf16":
        return torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _release(ctx: Ctx) -> None:
    import gc

    gc.collect()
    if ctx.cuda:
        import torch

        torch.cuda.empty_cache()


def _is_oom(error: BaseException) -> bool:
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return (bool(oom) and isinstance(error, oom)) or "out of memory" in str(error).lower()


def build_prior(dit_config: dict | None, vae_config: dict | None, device, seed: int, data_size: int | None = None):
    """A LatentPrior of a DiT and an AutoencoderKL with random weights, built on `device` and drawn from a
    generator on it (`init_weights_` re-draws every parameter; the global RNG is never seeded)."""
    _require("diffusers")
    import torch
    from diffusers import DDIMScheduler

    from diffdistill.prior import LatentPrior
    from diffdistill.prior.train import init_weights_

    pse = _bench("paper_scale_estimate")
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    dit = pse.build_dit(device, dit_config)
    init_weights_(dit, generator)
    vae = pse.build_vae(device, vae_config)
    init_weights_(vae, generator)
    schedule = dict(DDIMScheduler(num_train_timesteps=1000).config)  # DiT's: linear betas 1e-4 .. 0.02
    prior = LatentPrior(vae, dit, schedule, data_size=data_size)
    return prior.to(device).requires_grad_(False).eval()


def _max_abs(a, b) -> float:
    return float((a.detach().double().cpu() - b.detach().double().cpu()).abs().max())


# ----------------------------------------------------------------------------- section: environment


def section_environment(ctx: Ctx, out: Out) -> None:
    import importlib
    import importlib.metadata

    import torch

    r = out.results
    r.update(python=platform.python_version(), platform=platform.platform(), torch=torch.__version__,
             torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(), device=str(ctx.device),
             cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads())
    if torch.backends.cudnn.is_available():
        r["cudnn"] = torch.backends.cudnn.version()
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        r.update(gpu=props.name, capability=f"{props.major}.{props.minor}", gpu_memory_gib=props.total_memory / 2**30,
                 multiprocessors=props.multi_processor_count)
    versions, missing = {}, []
    for dist, _why in DEPENDENCIES.values():
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
            missing.append(dist)
    r["dependencies"] = versions
    for dist in missing:
        why = next(w for m, (d, w) in DEPENDENCIES.items() if d == dist)
        out.note(f"MISSING {dist}: {why}. " + (WHEEL_HINT if dist == "diffusers" else f"Carry a {dist} wheel."))
    out.check("dependencies present", ", ".join(missing) or "all", "none missing", not missing)

    layers = ["data", "nets", "augment", "diffusion", "prior", "distill.d3hr", "distill.ld3m", "distill.objectives",
              "distill.experts", "distill.baselines", "evaluation"]
    failed = {}
    for layer in layers:
        try:
            importlib.import_module(f"diffdistill.{layer}")
        except Exception as error:  # noqa: BLE001 - recorded, the other layers still load
            failed[layer] = f"{type(error).__name__}: {error}"
    r["layer_import_errors"] = failed
    out.check("algorithm layers import", ", ".join(failed) or "all", "all import", not failed)
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(FORBIDDEN_MODULES))
    out.check("no kedro / mlflow / kornia loaded", ", ".join(loaded) or "none", "none", not loaded)

    # ceilings: matmul rates and device copy bandwidth
    n, g = ctx.p.matmul_n, torch.Generator(device=ctx.device).manual_seed(0)
    pse = _bench("paper_scale_estimate")
    ceilings = {}
    for mode in ("fp32", "tf32", "bf16"):
        dtype = torch.bfloat16 if mode == "bf16" else torch.float32
        a = torch.randn((n, n), generator=g, device=ctx.device).to(dtype)
        b = torch.randn((n, n), generator=g, device=ctx.device).to(dtype)
        with precision(mode):
            t = _timed(lambda a=a, b=b: a @ b, ctx.sync, warmup=2, min_reps=5, min_s=0.2, max_reps=20)
        ceilings[mode] = 2 * n**3 / t["best_s"]
        peak = pse.H100_SXM[mode]
        out.compare(f"matmul {n}³ {mode}", ceilings[mode] / 1e12, "TFLOP/s", peak / 1e12, "assumed",
                    "paper_scale_estimate.H100_SXM (datasheet dense peak; the H200's compute peaks are the H100's)")
    r["matmul_tflops"] = {k: v / 1e12 for k, v in ceilings.items()}
    bandwidth = _copy_bandwidth(ctx, g)
    r["copy_bandwidth_tb_s"] = bandwidth / 1e12
    if ctx.cuda:
        out.compare("device copy bandwidth (read + write)", bandwidth / 1e12, "TB/s", 0.7 * 3.35, "assumed",
                    "paper_scale_estimate: 70 % of an H100's 3.35 TB/s (--bw-efficiency 0.7)")
        out.compare("copy bandwidth / H200 datasheet 4.8 TB/s", bandwidth / H200_HBM_BYTES_PER_S, "fraction", 0.7,
                    "assumed", "--bw-efficiency of paper_scale_estimate.py")
        out.note(f"Bandwidth efficiency for the estimate: `--bw-efficiency {bandwidth / H200_HBM_BYTES_PER_S:.2f}` "
                 "(a copy: the best case for the unfused elementwise kernels it models)")


def _copy_bandwidth(ctx: Ctx, generator) -> float:
    """Bytes read + written per second by one device-to-device copy of `copy_bytes`."""
    import torch

    src = torch.empty(ctx.p.copy_bytes // 4, device=ctx.device).normal_(generator=generator)
    dst = torch.empty_like(src)
    t = _timed(lambda: dst.copy_(src), ctx.sync, warmup=2, min_reps=5, min_s=0.2, max_reps=20)
    return 2 * src.nbytes / t["best_s"]


# ----------------------------------------------------------------------------- section: cuda_tests


def cuda_test_files() -> tuple[list[Path], list[str]]:
    """Test files with a CUDA variant (they test torch.cuda.is_available()); files that import the Kedro side
    cannot run on the device machine and are listed instead."""
    files, excluded = [], []
    kedro = re.compile(r"^\s*(import|from)\s+(kedro\w*|mlflow)\b", re.M)
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        text = path.read_text()
        if "torch.cuda.is_available()" not in text:
            continue
        (excluded.append(str(path.relative_to(ROOT))) if kedro.search(text) else files.append(path))
    return files, excluded


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(BENCHMARKS), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    return env


def _run_pytest(ctx: Ctx, out: Out) -> None:
    files, excluded = cuda_test_files()
    out.results["pytest_files"] = [str(p.relative_to(ROOT)) for p in files]
    if excluded:
        out.note(f"not run (they import the Kedro side): {', '.join(excluded)}")
    if not files:
        out.check("pytest: CUDA tests found", 0, ">= 1", False)
        return
    try:
        import pytest  # noqa: F401
    except ImportError:
        out.check("pytest available", "missing", "installed", False)
        return
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda",
               *[str(p.relative_to(ROOT)) for p in files]]
    timeout = max(10.0, min(60.0, ctx.left() - 5))
    try:
        proc = subprocess.run(command, cwd=ROOT, env=_worker_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        out.check("pytest -k cuda finished", f"> {timeout:.0f} s", "within the section budget", False)
        return
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    counts = {k: 0 for k in ("passed", "failed", "skipped", "error", "deselected")}
    for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tail[-1] if tail else ""):
        counts["error" if word.startswith("error") else word] = int(number)
    out.results["pytest"] = {"returncode": proc.returncode, **counts, "last_line": tail[-1] if tail else ""}
    out.check("pytest -k cuda: no failures or errors", f"{counts['failed']} failed, {counts['error']} errors",
              "0", proc.returncode in (0, 5) and counts["failed"] == counts["error"] == 0)
    out.check("pytest -k cuda: CUDA tests ran (not skipped)", counts["passed"], ">= 1 on CUDA",
              counts["passed"] >= 1 if ctx.cuda else None)
    if proc.returncode not in (0, 5):
        out.note("pytest output (tail):\n" + "\n".join(tail[-15:]))


def _d3hr_agreement(ctx: Ctx, out: Out) -> None:
    import torch

    from diffdistill.distill.d3hr import (
        PAPER_WEIGHTS,
        GroupSamplingConfig,
        regenerate_group,
        sample_group,
        score_groups,
    )

    p = ctx.p
    mu, sigma = _bench("bench_group_sampling").gaussian(p.check_dim)
    cfg = GroupSamplingConfig(m=p.check_m, weights=PAPER_WEIGHTS, chunk_size=p.check_chunk, seed=3)
    first = sample_group(mu, sigma, cfg, ipc=p.check_ipc, class_index=2, device=ctx.device)
    again = sample_group(mu, sigma, cfg, ipc=p.check_ipc, class_index=2, device=ctx.device)
    same = first.candidate_index == again.candidate_index and torch.equal(first.noise, again.noise)
    out.check(f"D3HR class on {ctx.device.type}, run twice: same group, same bits", same, "bit-identical", same)
    regen = regenerate_group((mu, sigma), first.recipe)
    out.check("D3HR regenerate_group from the recipe", torch.equal(regen, first.noise), "bit-identical",
              torch.equal(regen, first.noise))
    # the device's float32 streaming score of its kept group vs the float64 reference scorer on the CPU
    cpu_score = float(score_groups(first.noise.cpu().unsqueeze(0), mu, sigma, cfg.weights).total[0])
    rel = abs(first.score - cpu_score) / abs(cpu_score)
    out.check("D3HR kept group: device score vs CPU float64 score_groups", rel, "relative <= 1e-4", rel <= 1e-4)
    # the same candidates scored on both devices
    g = torch.Generator().manual_seed(11)
    candidates = mu + sigma * torch.randn((4 * p.check_chunk, p.check_ipc, p.check_dim), generator=g)
    on_cpu = score_groups(candidates, mu, sigma, cfg.weights).total
    on_dev = score_groups(candidates.to(ctx.device), mu.to(ctx.device), sigma.to(ctx.device), cfg.weights).total.cpu()
    rel = float(((on_dev - on_cpu).abs() / on_cpu.abs()).max())
    out.check("D3HR score_groups, same candidates, CPU vs device (float64)", rel, "relative <= 1e-9", rel <= 1e-9)
    out.check("D3HR score_groups: same best candidate", int(on_dev.argmin()) == int(on_cpu.argmin()), "equal",
              int(on_dev.argmin()) == int(on_cpu.argmin()))
    cpu = sample_group(mu, sigma, cfg, ipc=p.check_ipc, class_index=2, device="cpu")
    out.results["d3hr_best_score"] = {"device": first.score, "cpu": cpu.score, "ratio": first.score / cpu.score}
    out.note(f"D3HR best score at m = {p.check_m}: {first.score:.4f} on {ctx.device.type} vs {cpu.score:.4f} on CPU "
             "(different random streams by design: CUDA Philox vs CPU mt19937; same distribution)")


def _ld3m_one_iteration(prior, real, device: str) -> tuple[Any, list[dict]]:
    from diffdistill.distill.ld3m import distill_ld3m

    steps: list[dict] = []
    config = {"objective": "dm", "space": "latent", "ipc": 1, "iterations": 1, "seed": 5, "device": device,
              "checkpoint_every": 1000, "dm": {"net": "convnet", "batch_real": 8},
              "sampler": {"num_steps": 3, "guidance": 3.0, "variant": "reference", "backprop": "replay",
                          "chunk_size": 2}}
    return distill_ld3m(real, prior, config, on_step=steps.append), steps


def _ld3m_agreement(ctx: Ctx, out: Out) -> None:
    import copy

    import torch

    from diffdistill.config import build
    from diffdistill.data.bundle import TensorBundle
    from diffdistill.distill.ld3m import LD3MConfig, init_state
    from diffdistill.distill.objectives import RealImages

    prior_cpu = build_prior(TINY_DIT, TINY_VAE, "cpu", seed=7)
    prior_dev = copy.deepcopy(prior_cpu).to(ctx.device)
    g = torch.Generator().manual_seed(8)
    classes, per_class = 4, 6
    real = TensorBundle({"images": torch.randint(0, 256, (classes * per_class, 3, 16, 16), generator=g,
                                                 dtype=torch.uint8),
                         "labels": torch.arange(classes).repeat_interleave(per_class)},
                        {"num_classes": classes, "class_names": [str(k) for k in range(classes)], "source": "random"})
    with precision("strict"):
        cpu, cpu_steps = _ld3m_one_iteration(prior_cpu, real, "cpu")
        dev, dev_steps = _ld3m_one_iteration(prior_dev, real, str(ctx.device))
        dev2, _ = _ld3m_one_iteration(prior_dev, real, str(ctx.device))
        init = init_state(RealImages.from_bundle(real), prior_cpu, build(LD3MConfig, {
            "objective": "dm", "space": "latent", "ipc": 1, "seed": 5, "sampler": {"num_steps": 3}}, "ld3m")).latents
    z_cpu, z_dev, z_dev2 = (r.state.tensors["latents"] for r in (cpu, dev, dev2))
    x_cpu, x_dev, x_dev2 = (r.images.tensors["images"] for r in (cpu, dev, dev2))
    rerun = max(_max_abs(x_dev, x_dev2), _max_abs(z_dev, z_dev2))
    out.check(f"LD3M iteration on {ctx.device.type}, run twice (images, Z)", rerun, "max |diff| <= 1e-6",
              rerun <= 1e-6)
    images = _max_abs(x_cpu, x_dev)
    out.check("LD3M iteration, CPU vs device: images in [0, 1]", images, "max |diff| <= 1e-3", images <= 1e-3)
    step = float((z_cpu.double() - init.double().cpu()).abs().max())
    rel = _max_abs(z_cpu, z_dev) / max(step, 1e-30)
    out.check("LD3M iteration, CPU vs device: updated Z", rel, "max |diff| <= 1e-2 x the step's max |dZ|",
              rel <= 1e-2)
    loss_rel = abs(cpu_steps[0]["loss"] - dev_steps[0]["loss"]) / max(abs(cpu_steps[0]["loss"]), 1e-30)
    out.check("LD3M iteration, CPU vs device: DM loss", loss_rel, "relative <= 1e-4", loss_rel <= 1e-4)
    out.results["ld3m_iteration"] = {"step_max_abs_dz": step, "loss_cpu": cpu_steps[0]["loss"],
                                     "loss_device": dev_steps[0]["loss"], "rerun_bit_identical": rerun == 0.0,
                                     "regeneration_max_abs_diff": dev_steps[0].get("regeneration_max_abs_diff")}
    out.note("LD3M check: DM, latent space, IPC 1, 4 classes of random 16-px images, tiny random DiT + VAE, T = 3, "
             "guidance 3, sampler variant 'reference', backprop 'replay'; float32 without TF32 on both sides.")


def section_cuda_tests(ctx: Ctx, out: Out) -> None:
    if not ctx.cuda:
        out.note("No CUDA here: the device-side comparisons ran CPU against CPU (they exercise the code; on the "
                 "GPU they compare CPU with CUDA).")
    parts = (("pytest", _run_pytest), ("d3hr", _d3hr_agreement), ("ld3m", _ld3m_agreement))
    for name, part in parts:
        try:
            part(ctx, out)
        except Exception as error:  # noqa: BLE001 - one failing part must not hide the others
            out.check(f"{name}: ran", f"{type(error).__name__}: {error}", "no exception", False)
            out.note(f"{name} traceback:\n" + traceback.format_exc(limit=8))


# ----------------------------------------------------------------------------- section: dit_throughput


def _meta_forward_unit(pse, module, make_inputs, call):
    """paper_scale_estimate's unit of one batch-1 forward of `module`'s config on the meta device: the FLOPs and
    the ops exactly as the estimate counts them (so measured / counted is the efficiency it takes)."""
    import torch

    with torch.no_grad():
        return pse.measure(lambda: call(module, *make_inputs()), 1, (module,))


def _dit_forward(ctx: Ctx, out: Out, pse, generator) -> None:
    import torch

    from diffdistill.prior.train import init_weights_

    config = dict(ctx.p.dit or pse.DIT_XL2_CONFIG)
    dit = pse.build_dit(ctx.device, config).requires_grad_(False).eval()
    init_weights_(dit, generator)
    channels, size, classes = config["in_channels"], config["sample_size"], config["num_embeds_ada_norm"]
    r = out.results
    r["setting"] = {"model": "DiT-XL/2-256 (published config, random weights)" if ctx.p.dit is None else "tiny DiT",
                    "latents": f"{channels}x{size}x{size}", "batches": list(ctx.p.dit_batches)}
    r["dit_config"], r["parameters_m"] = config, pse.param_count(dit) / 1e6

    def inputs(batch: int, device=ctx.device, gen=generator):
        z = torch.randn((batch, channels, size, size), generator=gen, device=device)
        t = torch.randint(0, 1000, (batch,), generator=gen, device=device)
        y = torch.randint(0, classes, (batch,), generator=gen, device=device)
        return z, t, y

    def call(model, z, t, y):
        return model(z, timestep=t, class_labels=y).sample

    def forward(batch_inputs):
        with torch.no_grad():
            return call(dit, *batch_inputs)

    meta = pse.build_dit(pse.META, config).requires_grad_(False)
    unit = _meta_forward_unit(pse, meta, lambda: (torch.empty(1, channels, size, size, device=pse.META),
                                                  torch.full((1,), 500, device=pse.META),
                                                  torch.zeros(1, dtype=torch.long, device=pse.META)), call)
    one = inputs(1)
    with torch.no_grad():
        dispatched = pse.measure(lambda: forward(one), 1, (dit,)).ops  # ops launched here (fused attention)
    flops_per_image = unit.flops_matmul + unit.flops_conv
    r.update(gflop_per_image_forward=flops_per_image / 1e9, ops_per_forward_estimate=unit.ops,
             ops_per_forward_dispatched=dispatched)
    estimate_args = pse.parse_args([])
    assumed = estimate_args.efficiency
    rows = r["throughput"] = []
    efficiency: dict[str, float] = {}
    for batch in ctx.p.dit_batches:
        batch_inputs = inputs(batch)
        for mode in ("fp32", "tf32", "bf16"):
            if ctx.left() < 5:
                out.note(f"section budget spent: batch {batch} {mode} not measured")
                continue
            with precision(mode), _autocast(ctx, mode):
                t = _timed(lambda b=batch_inputs: forward(b), ctx.sync, warmup=2, min_reps=3, min_s=0.5, max_reps=20,
                           limit_s=max(1.0, ctx.left() / 8))
            achieved = flops_per_image * batch / t["best_s"]
            peak = pse.H100_SXM[mode]
            computed = pse.make_gpu(estimate_args, PRECISION_TO_ESTIMATE[mode]).seconds(unit.cost(batch))
            rows.append({"batch": batch, "mode": mode, **t, "images_per_s": batch / t["best_s"],
                         "tflops": achieved / 1e12, "efficiency_vs_h100_peak": achieved / peak, "estimate_s": computed})
            efficiency[mode] = max(efficiency.get(mode, 0.0), achieved / peak)
            out.compare(f"DiT forward, batch {batch}, {mode}: time ({achieved / 1e12:.3g} TFLOP/s)", t["best_s"], "s",
                        computed, "computed", f"paper_scale_estimate model at {assumed:.0%} of the H100 {mode} peak")
    for mode, value in efficiency.items():
        out.compare(f"DiT efficiency {mode} (best batch) vs H100 {mode} peak", value, "fraction", assumed, "assumed",
                    f"README / paper_scale_estimate --efficiency {assumed} (peak {pse.H100_SXM[mode] / 1e12:g} TFLOP/s)")
    r["efficiency"] = efficiency
    if efficiency:
        r["estimate_flags"] = {mode: f"--precision {PRECISION_TO_ESTIMATE[mode]} --efficiency {value:.3g}"
                               for mode, value in efficiency.items()}
        out.note("Feed back into the estimate: " + "; ".join(
            f"`python benchmarks/paper_scale_estimate.py {flag}`" for flag in r["estimate_flags"].values()))
    # launch-bound latency: a batch-1 forward over the ops the estimate counts (upper bound of host time per op)
    if ctx.left() > 3:
        with precision("tf32"):
            t = _timed(lambda: forward(one), ctx.sync, warmup=2, min_reps=5, min_s=0.2, max_reps=50)
        host_us = t["best_s"] / unit.ops * 1e6
        r["batch1_forward_s"], r["host_us_per_op_upper_bound"] = t["best_s"], host_us
        out.compare(f"DiT batch-1 forward {t['best_s'] * 1e3:.3g} ms / {unit.ops} counted ops (upper bound of host "
                    "time per op)", host_us, "µs", estimate_args.host_us, "assumed", "paper_scale_estimate --host-us")
        out.note(f"Host time per op (upper bound) for the estimate: `--host-us {host_us:.3g}`")


def _vae_decode(ctx: Ctx, out: Out, pse, generator) -> None:
    """The VAE decoder: convolutions, which the estimate runs at TF32 (cuDNN's default) in float32."""
    import torch

    from diffdistill.prior.train import init_weights_

    config = dict(ctx.p.vae or pse.SD_VAE_CONFIG)
    vae = pse.build_vae(ctx.device, config).requires_grad_(False).eval()
    init_weights_(vae, generator)
    latent_size = config["sample_size"] // 2 ** (len(config["block_out_channels"]) - 1)
    shape = (config["latent_channels"], latent_size, latent_size)
    z = torch.randn((ctx.p.vae_batch, *shape), generator=generator, device=ctx.device)

    def decode(model, latents):
        return model.decode(latents).sample

    unit = _meta_forward_unit(pse, pse.build_vae(pse.META, config).requires_grad_(False),
                              lambda: (torch.empty(1, *shape, device=pse.META),), decode)
    estimate_args = pse.parse_args([])
    for mode in ("fp32", "bf16"):
        if ctx.left() < 3:
            continue
        with precision(mode), _autocast(ctx, mode), torch.no_grad():
            t = _timed(lambda: decode(vae, z), ctx.sync, warmup=1, min_reps=3, min_s=0.3, max_reps=10,
                       limit_s=max(1.0, ctx.left() / 3))
        achieved = (unit.flops_matmul + unit.flops_conv) * ctx.p.vae_batch / t["best_s"]
        peak = pse.H100_SXM["tf32" if mode == "fp32" else "bf16"]
        computed = pse.make_gpu(estimate_args, PRECISION_TO_ESTIMATE[mode]).seconds(unit.cost(ctx.p.vae_batch))
        out.results.setdefault("vae_decode", []).append({"mode": mode, "batch": ctx.p.vae_batch, **t,
                                                         "tflops": achieved / 1e12, "efficiency": achieved / peak})
        out.compare(f"VAE decode {config['sample_size']} px, batch {ctx.p.vae_batch}, {mode} (convs "
                    f"{'TF32' if mode == 'fp32' else 'bf16'}): time; efficiency {achieved / peak:.3g}", t["best_s"], "s",
                    computed, "computed", f"paper_scale_estimate model at {estimate_args.efficiency:.0%} of the peak")


def section_dit_throughput(ctx: Ctx, out: Out) -> None:
    import torch

    _require("diffusers")
    pse = _bench("paper_scale_estimate")
    generator = torch.Generator(device=ctx.device).manual_seed(1)
    _dit_forward(ctx, out, pse, generator)
    _release(ctx)
    if ctx.left() > 5:
        _vae_decode(ctx, out, pse, generator)
    else:
        out.note("section budget spent: VAE decode not measured")


# ----------------------------------------------------------------------------- section: ld3m_memory


def _ld3m_estimate(ctx: Ctx, n: int, chunk: int, steps: int) -> dict[str, float]:
    """paper_scale_estimate's model of the generator side (its units on the meta device): peak memory of replay
    (as in Estimator.generation_round) and of plain autograd (T steps' saved tensors), and the times."""
    pse = _bench("paper_scale_estimate")
    key = (n, chunk)
    cache = ctx.__dict__.setdefault("_units", {})
    if key not in cache:
        dit, vae = pse.build_dit(pse.META, ctx.p.dit), pse.build_vae(pse.META, ctx.p.vae)
        units = {**pse.dit_units(dit), **pse.vae_units(vae, ctx.p.data_size)}
        cache[key] = units, (pse.param_count(dit) + pse.param_count(vae)) * pse.FLOAT
    u, weights = cache[key]
    gpu = pse.make_gpu(pse.parse_args(["--precision", "tf32"]))
    guided, guided_grad = u["dit_guided"].images(n, chunk) * steps, u["dit_guided_grad"].images(n, chunk) * steps
    decode, decode_grad = u["decode"].images(n, chunk), u["decode_grad"].images(n, chunk)
    replay = decode + decode_grad + guided + guided_grad
    return {
        "replay_peak_bytes": weights + max(u["decode_grad"].activations(chunk), u["dit_guided_grad"].activations(chunk)),
        "plain_peak_bytes": weights + steps * u["dit_guided_grad"].saved(n) + u["decode_grad"].activations(n),
        "replay_s": gpu.seconds(replay), "checkpoint_s": gpu.seconds(replay + guided),
        "plain_s": gpu.seconds(u["dit_guided_grad"].images(n, n) * steps + u["decode_grad"].images(n, n)),
        "weights_bytes": weights,
    }


def section_ld3m_memory(ctx: Ctx, out: Out) -> None:
    import torch

    bench = _bench("bench_ld3m")
    p = ctx.p
    r = out.results
    mode_precision = "tf32" if ctx.cuda else "fp32"
    r["setting"] = {"images": p.ld3m_images, "chunk_size": p.ld3m_chunk, "data_size": p.data_size, "guidance": 3.0,
                    "variant": "reference", "precision": mode_precision, "steps": list(p.ld3m_steps)}
    prior = build_prior(p.dit, p.vae, ctx.device, seed=2, data_size=p.data_size)
    args = argparse.Namespace(device=str(ctx.device), images=p.ld3m_images, chunk_size=p.ld3m_chunk,
                              image_size=p.data_size, guidance=3.0, eta=0.0, iterations=p.ld3m_iterations)
    capacity = torch.cuda.get_device_properties(ctx.device).total_memory if ctx.cuda else None
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    order = [("replay", s) for s in (p.ld3m_steps[0], p.ld3m_steps[-1], *p.ld3m_steps[1:-1])]
    order += [("plain", s) for s in p.ld3m_steps] + [("checkpoint", s) for s in p.ld3m_steps]
    seconds_per_step: dict[str, float] = {}
    with precision(mode_precision):
        for mode, steps in order:
            row = rows[mode, steps] = {"mode": mode, "steps": steps}
            per_step = seconds_per_step.get(mode, seconds_per_step.get("replay"))
            expected = None if per_step is None else per_step * steps * (2 + args.iterations)
            if expected is not None and expected > ctx.left() - 5:
                row["skipped"] = f"section budget: ~{expected:.0f} s expected, {ctx.left():.0f} s left"
                continue
            if mode == "plain" and capacity:
                done = sorted((s, rows["plain", s]["peak_total_mb"]) for s in p.ld3m_steps
                              if "peak_total_mb" in rows.get(("plain", s), {}))
                if len(done) >= 2:
                    (s0, m0), (s1, m1) = done[-2], done[-1]
                    predicted = (m1 + (m1 - m0) / (s1 - s0) * (steps - s1)) * 2**20
                else:
                    predicted = _ld3m_estimate(ctx, p.ld3m_images, p.ld3m_chunk, steps)["plain_peak_bytes"]
                if predicted > 0.9 * capacity:
                    row["skipped"] = (f"plain autograd predicted to need {predicted / 1e9:.0f} GB "
                                      f"(> 90 % of {capacity / 1e9:.0f} GB)")
                    continue
            try:
                memory = bench.measure_memory(args, prior, mode, steps)
                if ctx.cuda:
                    memory["peak_reserved_mb"] = torch.cuda.max_memory_reserved(ctx.device) / 2**20
                timing = bench.measure_time(args, prior, [mode], steps)[0]
                row.update(memory, **timing)
                seconds_per_step[mode] = timing["time_s"] / steps
            except Exception as error:  # noqa: BLE001 - OOM or other: recorded, the next configuration runs
                row["error"] = ("out of memory: " if _is_oom(error) else "") + f"{type(error).__name__}: {error}"[:300]
            _release(ctx)
    r["rows"] = list(rows.values())
    estimates = {}
    try:
        for steps in p.ld3m_steps:
            estimates[steps] = _ld3m_estimate(ctx, p.ld3m_images, p.ld3m_chunk, steps)
        r["estimate"] = estimates
    except Exception as error:  # noqa: BLE001
        out.note(f"paper_scale_estimate model not computed: {type(error).__name__}: {error}")
    lo, hi = min(p.ld3m_steps), max(p.ld3m_steps)
    for mode in ("replay", "checkpoint", "plain"):
        a, b = rows.get((mode, lo), {}), rows.get((mode, hi), {})
        if "peak_total_mb" not in a or "peak_total_mb" not in b:
            continue
        above = b["peak_above_baseline_mb"] / max(a["peak_above_baseline_mb"], 1e-9)
        total = b["peak_total_mb"] / max(a["peak_total_mb"], 1e-9)
        r[f"{mode}_memory_ratio"] = {"above_baseline": above, "total": total}
        if mode == "replay":
            out.check(f"replay: peak memory above baseline T={hi} / T={lo}", above, f"<= {GOAL_LD3M_MEMORY_RATIO}",
                      above <= GOAL_LD3M_MEMORY_RATIO if ctx.cuda else None)
            out.compare(f"replay: peak memory T={hi} / T={lo} (above baseline; total {total:.2f})", above, "ratio",
                        GOAL_LD3M_MEMORY_RATIO, "goal", "issue #14")
    for (mode, steps), row in rows.items():
        est = estimates.get(steps, {})
        if "peak_total_mb" in row:
            reference = est.get(f"{mode}_peak_bytes", est.get("replay_peak_bytes") if mode == "checkpoint" else None)
            out.compare(f"{mode} T={steps}: peak memory (total)", row["peak_total_mb"] * 2**20 / 1e9, "GB",
                        None if reference is None else reference / 1e9, "computed",
                        "paper_scale_estimate's counting model (saved tensors + largest op; meta device)")
            out.compare(f"{mode} T={steps}: time per iteration", row["time_s"], "s", est.get(f"{mode}_s"), "computed",
                        "paper_scale_estimate model, TF32, 40 % (generator side only)")
    t20 = rows.get(("replay", 20), {})
    if "peak_total_mb" in t20:
        for name, gb in LD3M_PUBLISHED_GB.items():
            out.compare(f"replay T=20: peak memory (total) vs {name}", t20["peak_total_mb"] * 2**20 / 1e9, "GB", gb,
                        "published", f"LD3M paper, {name} at T = 20 on an A100 (their setting: objective included)")
    if not ctx.cuda:
        out.note("CPU: memory is the process's peak RSS, which never falls, so per-configuration figures and the "
                 "ratio are not meaningful here (bench_ld3m.py runs one process per configuration for that).")
    out.note("Generator side of one LD3M iteration (bench_ld3m.make_iteration): regenerate the synthetic set and push "
             "a fixed loss's dL/dX into Z and c; the objective's own memory and time are not included.")


# ----------------------------------------------------------------------------- section: d3hr_sampling


def _d3hr_estimate(m: int, ipc: int, dim: int, chunk: int) -> float:
    """paper_scale_estimate's model of one class's paper sampler (as Estimator.group_sampling): per candidate a
    seeding + normal_ (2 ops, bytes written), per chunk the scoring ops counted on meta."""
    import torch

    from diffdistill.distill.d3hr import _power_sums, _terms_from_sums

    pse = _bench("paper_scale_estimate")
    k = min(chunk, m)
    sigma = torch.empty(dim, device=pse.META)
    unit = pse.measure(lambda: _terms_from_sums(*_power_sums(torch.empty(k, ipc, dim, device=pse.META)), ipc, sigma), k)
    cost = pse.Cost(bytes_moved=m * ipc * dim * pse.FLOAT, ops=m * 2) + unit.images(m, k)
    return pse.make_gpu(pse.parse_args([])).seconds(cost)


def section_d3hr_sampling(ctx: Ctx, out: Out) -> None:
    import torch

    from diffdistill.distill.d3hr import PAPER_WEIGHTS, GroupSamplingConfig, sample_group

    bench = _bench("bench_group_sampling")
    p, r = ctx.p, out.results
    mu, sigma = bench.gaussian(p.d3hr_dim)
    r["setting"] = {"dim": p.d3hr_dim, "ipc": p.d3hr_ipc, "m": p.d3hr_m, "chunks": list(p.d3hr_chunks)}
    sample_group(mu, sigma, GroupSamplingConfig(m=8, weights=PAPER_WEIGHTS, chunk_size=4, seed=0), ipc=p.d3hr_ipc,
                 device=ctx.device)

    def run_sampler(m: int, chunk: int) -> dict[str, Any]:
        cfg = GroupSamplingConfig(m=m, weights=PAPER_WEIGHTS, chunk_size=chunk, seed=0)
        if ctx.cuda:
            ctx.sync()
            torch.cuda.reset_peak_memory_stats(ctx.device)
            base = torch.cuda.memory_allocated(ctx.device)
        start = time.perf_counter()
        selection = sample_group(mu, sigma, cfg, ipc=p.d3hr_ipc, device=ctx.device)
        ctx.sync()
        row = {"m": m, "chunk": chunk, "seconds_per_class": time.perf_counter() - start, "score": selection.score}
        if ctx.cuda:
            row["peak_above_baseline_mb"] = (torch.cuda.max_memory_allocated(ctx.device) - base) / 2**20
        return row

    rows = r["rows"] = []
    for chunk in p.d3hr_chunks:
        if rows and ctx.left() < 3 * rows[0]["seconds_per_class"] + 5:
            out.note(f"section budget: chunk {chunk} not measured")
            continue
        rng = _timed(lambda c=chunk: bench.rng_limit(p.d3hr_m, p.d3hr_ipc, p.d3hr_dim, c, ctx.device), ctx.sync,
                     warmup=1, min_reps=2, min_s=0.0, max_reps=3)
        row = run_sampler(p.d3hr_m, chunk)
        row.update(rng_limit_s=rng["best_s"], ratio_to_rng_limit=row["seconds_per_class"] / rng["best_s"],
                   normals_per_s=p.d3hr_m * p.d3hr_ipc * p.d3hr_dim / rng["best_s"],
                   estimate_s=_d3hr_estimate(p.d3hr_m, p.d3hr_ipc, p.d3hr_dim, chunk))
        rows.append(row)
        out.compare(f"paper sampler, m = {p.d3hr_m:.0e}, chunk {chunk}: time per class", row["seconds_per_class"], "s",
                    row["estimate_s"], "computed", "paper_scale_estimate model (10 µs host per op, 70 % bandwidth)")
        out.compare(f"  … ratio to the RNG limit (same normals into one buffer, chunk {chunk})",
                    row["ratio_to_rng_limit"], "x", GOAL_RNG_RATIO, "goal", "bench_group_sampling.py (goal set on CPU)")
        if "peak_above_baseline_mb" in row:
            formula = (2 * chunk * p.d3hr_ipc * p.d3hr_dim + 3 * chunk * p.d3hr_dim) * 4 / 2**20
            out.compare(f"  … peak memory above baseline, chunk {chunk}", row["peak_above_baseline_mb"], "MiB",
                        formula, "computed", "paper_scale_estimate Estimator.d3hr (2 x chunk x ipc x D + 3 x chunk x D floats)")
    if rows:
        best = min(rows, key=lambda row: row["seconds_per_class"])
        scaled = best["seconds_per_class"] * D3HR_REFERENCE["m"] / p.d3hr_m
        out.compare(f"paper sampler at m = 1e6 (m = {p.d3hr_m:.0e} x {D3HR_REFERENCE['m'] // p.d3hr_m}, linear in m)",
                    scaled, "s/class", D3HR_REFERENCE["seconds_per_class"], "published",
                    "D3HR reference code, 2.6 s/class on an A6000 at m = 1e6")
        expected = best["seconds_per_class"] * p.d3hr_big_m / p.d3hr_m
        if ctx.left() > 1.5 * expected + 5:
            big = run_sampler(p.d3hr_big_m, best["chunk"])
            rows.append(big)
            out.compare(f"paper sampler at m = {p.d3hr_big_m:.0e}, chunk {best['chunk']}: time per class (measured)",
                        big["seconds_per_class"], "s", D3HR_REFERENCE["seconds_per_class"] * p.d3hr_big_m
                        / D3HR_REFERENCE["m"], "published", "D3HR reference, A6000, scaled to this m")
        else:
            out.note(f"m = {p.d3hr_big_m:.0e} not run: ~{expected:.0f} s expected, {ctx.left():.0f} s left")
    out.note("One class; classes are independent (sharded runs put them on separate GPUs). Each candidate has its own "
             "seeded stream, so on CUDA every candidate costs a seeding and a kernel launch.")


# ----------------------------------------------------------------------------- section: eval_loop


def section_eval_loop(ctx: Ctx, out: Out) -> None:
    bench = _bench("bench_eval")
    p, r = ctx.p, out.results
    data = bench.make_data(p.eval_n, p.eval_size, 3, p.eval_classes)
    r["setting"] = {"n": p.eval_n, "size": p.eval_size, "epochs": p.eval_epochs, "batch": p.eval_batch,
                    "width": p.eval_width, "arch": "convnet", "dsa": "default"}
    bases, fp32s, bf16s = [], [], []
    with precision("fp32"):  # PyTorch's defaults, the same on both sides
        for repeat in range(p.eval_repeats):
            started = time.monotonic()
            bases.append(bench.dataloader_baseline(data, p.eval_epochs, p.eval_batch, p.eval_width, ctx.device))
            fp32s.append(bench.ours(data, p.eval_epochs, p.eval_batch, p.eval_width, ctx.device, "fp32"))
            bf16s.append(bench.ours(data, p.eval_epochs, p.eval_batch, p.eval_width, ctx.device, "bf16"))
            if ctx.left() < 1.5 * (time.monotonic() - started):
                if repeat + 1 < p.eval_repeats:
                    out.note(f"section budget: {repeat + 1} of {p.eval_repeats} repeats")
                break
    base, fp32, bf16 = (statistics.median(v) for v in (bases, fp32s, bf16s))
    r.update(dataloader_images_per_s=base, fit_fp32_images_per_s=fp32, fit_bf16_images_per_s=bf16,
             speedup_fp32=fp32 / base, speedup_bf16=bf16 / base, repeats=len(bases))
    out.compare("fit (fp32) vs DataLoader loop (fp32): speed-up", fp32 / base, "x", GOAL_EVAL_SPEEDUP, "goal",
                "issue #14 (equal precision)")
    out.compare("fit (bf16 autocast) vs DataLoader loop (fp32): speed-up", bf16 / base, "x", None, "", "")
    out.compare("DataLoader loop throughput", base, "images/s")
    out.check("fit vs DataLoader at equal precision (fp32)", fp32 / base, f">= {GOAL_EVAL_SPEEDUP}",
              fp32 / base >= GOAL_EVAL_SPEEDUP if ctx.cuda else None)


# ----------------------------------------------------------------------------- section: pixel_dm


def section_pixel_dm(ctx: Ctx, out: Out) -> None:
    import torch

    from diffdistill.data.bundle import TensorBundle
    from diffdistill.distill.ld3m import distill_ld3m

    p, r = ctx.p, out.results
    g = torch.Generator().manual_seed(21)
    n = p.dm_classes * p.dm_per_class
    real = TensorBundle({"images": torch.randint(0, 256, (n, 3, p.dm_size, p.dm_size), generator=g, dtype=torch.uint8),
                         "labels": torch.arange(p.dm_classes).repeat_interleave(p.dm_per_class)},
                        {"num_classes": p.dm_classes, "class_names": [str(k) for k in range(p.dm_classes)],
                         "source": "cifar10"})
    steps: list[dict] = []
    config = {"objective": "dm", "space": "pixel", "ipc": p.dm_ipc, "iterations": p.dm_iterations, "seed": 0,
              "device": str(ctx.device), "checkpoint_every": 10**9,
              "dm": {"net": "convnet", "batch_real": p.dm_batch_real}}

    def on_step(metrics: dict) -> None:
        steps.append(metrics)
        if ctx.left() < 2 and len(steps) >= 2:
            raise _StopEarly

    with precision("fp32"):
        with contextlib.suppress(_StopEarly):
            distill_ld3m(real, None, config, on_step=on_step)
    times = [s["time_s"] for s in steps[1:]] or [s["time_s"] for s in steps]
    per_iteration = statistics.median(times)
    r.update(iterations=len(steps), seconds_per_iteration=per_iteration, per_1000_iterations_s=1000 * per_iteration,
             peak_memory_bytes=max(s["peak_memory_bytes"] for s in steps), memory_kind=steps[-1]["memory_kind"],
             setting={"classes": p.dm_classes, "ipc": p.dm_ipc, "size": p.dm_size, "batch_real": p.dm_batch_real})
    out.compare("pixel DM, IPC 10: time per iteration", per_iteration, "s")
    out.compare("pixel DM: time per 1,000 iterations", 1000 * per_iteration / 60, "min")
    out.note("Random CIFAR-10-shaped data (CIFAR-10 is not on the device machine): timing and memory only, no accuracy.")


class _StopEarly(Exception):
    pass


SECTION_FUNCS: dict[str, Callable[[Ctx, Out], None]] = {
    "environment": section_environment,
    "cuda_tests": section_cuda_tests,
    "dit_throughput": section_dit_throughput,
    "ld3m_memory": section_ld3m_memory,
    "d3hr_sampling": section_d3hr_sampling,
    "eval_loop": section_eval_loop,
    "pixel_dm": section_pixel_dm,
}


# ----------------------------------------------------------------------------- worker


def _emit(events, payload: dict) -> None:
    events.write(json.dumps(payload, default=str) + "\n")
    events.flush()


def _free_memory() -> None:
    """Between sections: drop what the last one left and hand cached CUDA blocks back (clean peaks)."""
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _cuda_healthy(device: str) -> bool:
    """False when the CUDA context is broken (an illegal access poisons it for the rest of the process)."""
    torch = sys.modules.get("torch")
    if torch is None or not device.startswith("cuda") or not torch.cuda.is_initialized():
        return True
    try:
        torch.cuda.synchronize()
        torch.zeros(1, device=device).add_(1).item()
        return True
    except Exception:  # noqa: BLE001
        return False


def worker_main(args: argparse.Namespace) -> int:
    profile = SMOKE if args.smoke else FULL
    faults = dict(item.split(":", 1) for item in args.inject_fault)
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    with open(args.events, "a") as events:
        _emit(events, {"event": "worker", "pid": os.getpid(), "time": time.time()})
        for name in args.sections:
            section = SECTION_BY_NAME[name]
            budget = section_budget(section, args.smoke)
            left = args.deadline_at - time.time()
            reason = skip_reason(section, left, budget)
            if reason:
                _emit(events, {"event": "skip", "section": name, "reason": reason})
                continue
            budget = min(budget, left)
            _emit(events, {"event": "start", "section": name, "time": time.time(), "budget_s": budget})
            started, out = time.monotonic(), Out()
            result: dict[str, Any] = {"status": "ok"}
            try:
                fault = faults.get(name)
                if fault == "hang":
                    while True:
                        time.sleep(1)
                if fault == "exit":
                    os._exit(7)
                if fault == "raise":
                    raise RuntimeError("fault injected by --inject-fault")
                SECTION_FUNCS[name](Ctx(args, profile, budget), out)
            except MissingDependency as error:
                result.update(status="failed", error=str(error))
            except Exception as error:  # noqa: BLE001 - the report records it; the next section runs
                result.update(status="failed", error=f"{type(error).__name__}: {error}",
                              traceback=traceback.format_exc(limit=12))
            result.update(out.as_dict(), seconds=time.monotonic() - started, budget_s=budget)
            _emit(events, {"event": "end", "section": name, "result": result})
            out = None
            _free_memory()
            if not _cuda_healthy(args.device):
                _emit(events, {"event": "unhealthy", "section": name})
                return 3  # a fresh worker (new CUDA context) takes the remaining sections
        loaded = sorted({m.split(".")[0] for m in sys.modules} & set(FORBIDDEN_MODULES))
        _emit(events, {"event": "final", "forbidden_modules_loaded": loaded})
    return 0


# ----------------------------------------------------------------------------- parent: scheduling and the report


def _git_revision() -> str:
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{sha}{' (dirty)' if dirty else ''}" if sha else "unknown (no git here)"
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git here)"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.3g}" if abs(value) >= 1e-3 else f"{value:.2e}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict) -> str:
    meta = report["meta"]
    env = report["sections"].get("environment", {}).get("results", {})
    machine = env.get("gpu") or f"{env.get('device', meta['device'])} ({platform.machine()})"
    lines = [f"# GPU check: {machine}, {meta['started_utc'][:10]}", "",
             f"Profile `{meta['profile']}`, device `{meta['device']}`, started {meta['started_utc']}, "
             f"{meta.get('elapsed_s', 0):.0f} s of a {meta['deadline_s']:.0f} s deadline; "
             f"torch {env.get('torch', '?')} (CUDA {env.get('torch_cuda') or '–'}), Python {env.get('python', '?')}, "
             f"commit {meta['git']}. Command: `{meta['command']}`.", "",
             "| section | status | seconds | budget s | checks passed |", "|---|---|---|---|---|"]
    for name, sec in report["sections"].items():
        checks = sec.get("checks", [])
        judged = [c for c in checks if c["passed"] is not None]
        passed = sum(c["passed"] for c in judged)
        lines.append(f"| {name} | {sec.get('status', 'pending')} | {_fmt(sec.get('seconds'))} | "
                     f"{_fmt(sec.get('budget_s'))} | {f'{passed}/{len(judged)}' if judged else '–'} |")
    for name, sec in report["sections"].items():
        title = SECTION_BY_NAME[name].title if name in SECTION_BY_NAME else name
        lines += ["", f"## {name}: {title}", "", f"Status: **{sec.get('status', 'pending')}**"
                  + (f" ({sec['reason']})" if sec.get("reason") else "")]
        setting = sec.get("results", {}).get("setting")
        if setting:
            lines += ["", "Setting: " + ", ".join(f"{k} {_fmt(v)}" for k, v in setting.items())]
        if sec.get("error"):
            lines += ["", f"Error: {sec['error']}"]
        if sec.get("comparisons"):
            lines += ["", "| quantity | measured | unit | figure it replaces | kind | source |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {_fmt(c['quantity'])} | {_fmt(c['measured'])} | {_fmt(c['unit'])} | {_fmt(c['reference'])} | "
                      f"{_fmt(c['kind'])} | {_fmt(c['source'])} |" for c in sec["comparisons"]]
        if sec.get("checks"):
            lines += ["", "| check | value | limit | passed |", "|---|---|---|---|"]
            lines += [f"| {_fmt(c['name'])} | {_fmt(c['value'])} | {_fmt(c['limit'])} | "
                      f"{'n/a here' if c['passed'] is None else _fmt(c['passed'])} |" for c in sec["checks"]]
        for note in sec.get("notes", []):
            if "\n" in note:
                head, _, body = note.partition("\n")
                lines += ["", f"- {head}", "", "```", body.rstrip(), "```"]
            else:
                lines += ["", f"- {note}"]
        if sec.get("traceback"):
            lines += ["", "```", sec["traceback"].rstrip(), "```"]
    lines += ["", "Raw figures: `gpu_check.json` (every section's `results`); worker output: `gpu_check.log`.", ""]
    return "\n".join(lines)


def write_report(out_dir: Path, report: dict) -> None:
    for name, text in ((REPORT_JSON, json.dumps(report, indent=1, default=str)), (REPORT_MD, render_markdown(report))):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out_dir / name)


def _hard_cap(section: Section, args: argparse.Namespace) -> float:
    for item in args.hard_cap:
        name, _, seconds = item.partition("=")
        if name == section.name:
            return float(seconds)
    budget = section_budget(section, args.smoke)
    return budget * 2 + 30 if args.smoke else budget * 1.5 + 20


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the worker's own session: it and its pytest child, nothing else
    proc.wait()


def _log_tail(path: Path, offset: int, lines: int = 20) -> str:
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        f.seek(offset)
        return "\n".join(f.read().splitlines()[-lines:])
    return ""


def run_parent(args: argparse.Namespace) -> int:
    profile = SMOKE if args.smoke else FULL
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    events_path, log_path = out_dir / EVENTS_FILE, out_dir / LOG_FILE
    events_path.write_text("")
    log_path.write_text("")
    deadline_s = args.deadline_s if args.deadline_s is not None else profile.deadline_s
    start_wall, start = time.time(), time.monotonic()
    deadline_at = start_wall + deadline_s
    selected = [s.name for s in SECTIONS if not args.sections or s.name in args.sections]
    report = {
        "meta": {"profile": profile.name, "device": args.device, "started_utc":
                 dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "deadline_s": deadline_s,
                 "git": args.commit or _git_revision(), "command": " ".join(["python", *sys.argv]),
                 "out": str(out_dir)},
        "sections": {name: {"status": "pending"} for name in selected},
    }
    write_report(out_dir, report)
    remaining, offset = list(selected), 0
    print(f"gpu_check: profile {profile.name}, device {args.device}, deadline {deadline_s:.0f} s, report in {out_dir}",
          flush=True)

    def finish(name: str, entry: dict) -> None:
        report["sections"][name] = entry
        if name in remaining:
            remaining.remove(name)
        report["meta"]["elapsed_s"] = time.monotonic() - start
        write_report(out_dir, report)
        checks = [c for c in entry.get("checks", []) if c["passed"] is not None]
        failed = [c["name"] for c in checks if not c["passed"]]
        print(f"  {name:15s} {entry['status']:8s} {entry.get('seconds', 0):6.1f} s"
              + (f"  checks {len(checks) - len(failed)}/{len(checks)}" if checks else "")
              + (f"  FAILED: {'; '.join(failed)}" if failed else "")
              + (f"  ({entry.get('reason') or entry.get('error')})" if entry["status"] != "ok" else ""), flush=True)

    while remaining:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--device", args.device,
                   "--events", str(events_path), "--deadline-at", repr(deadline_at), "--threads", str(args.threads),
                   "--sections", *remaining, *(["--smoke"] if args.smoke else []),
                   *[x for item in args.inject_fault for x in ("--inject-fault", item)]]
        with open(log_path, "a") as log:
            log_offset = log.tell()
            proc = subprocess.Popen(command, cwd=ROOT, env=_worker_env(), stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        current, current_start, started_any = None, 0.0, False
        while True:
            with open(events_path) as f:
                f.seek(offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            offset += len(complete)
            for line in complete.splitlines():
                event = json.loads(line)
                kind, name = event["event"], event.get("section")
                if kind == "start":
                    current, current_start, started_any = name, time.monotonic(), True
                    report["sections"][name] = {"status": "running", "budget_s": event["budget_s"]}
                    write_report(out_dir, report)
                elif kind == "end":
                    finish(name, event["result"])
                    current = None
                elif kind == "skip":
                    finish(name, {"status": "skipped", "reason": event["reason"]})
                    started_any = True
                elif kind == "final":
                    report["meta"]["forbidden_modules_loaded"] = event["forbidden_modules_loaded"]
            returncode = proc.poll()
            if returncode is not None and not complete:
                if current is not None:
                    finish(current, {"status": "crashed", "seconds": time.monotonic() - current_start,
                                     "error": f"worker exited with code {returncode} inside the section",
                                     "traceback": _log_tail(log_path, log_offset)})
                elif remaining and not started_any:
                    error = f"worker exited with code {returncode} before starting a section"
                    for name in list(remaining):
                        finish(name, {"status": "crashed", "error": error, "traceback": _log_tail(log_path, log_offset)})
                break
            if current is not None:
                section = SECTION_BY_NAME[current]
                limit = min(_hard_cap(section, args), deadline_at + 30 - time.time() + (time.monotonic() - current_start))
                if time.monotonic() - current_start > limit:
                    _kill(proc)
                    finish(current, {"status": "timeout", "seconds": time.monotonic() - current_start,
                                     "error": f"killed after {limit:.0f} s (the section's hard limit; budget "
                                              f"{section_budget(section, args.smoke):.0f} s)",
                                     "traceback": _log_tail(log_path, log_offset)})
                    break
            time.sleep(0.1)
    report["meta"]["elapsed_s"] = time.monotonic() - start
    write_report(out_dir, report)
    statuses = [s.get("status") for s in report["sections"].values()]
    failed_checks = sum(1 for s in report["sections"].values() for c in s.get("checks", []) if c["passed"] is False)
    print(f"gpu_check: {statuses.count('ok')}/{len(statuses)} sections ok, {failed_checks} checks failed, "
          f"{report['meta']['elapsed_s']:.0f} s; {out_dir / REPORT_MD}", flush=True)
    return 0


def default_out() -> str:
    if os.environ.get("OUT"):
        return os.environ["OUT"]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return str(BENCHMARKS / "results" / "gpu_check" / stamp)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (CI): every section in ~30 s")
    parser.add_argument("--device", default=None, help="cuda (default when available; required without --smoke) "
                        "or cpu (the default with --smoke)")
    parser.add_argument("--out", default=None, help="report folder (default: $OUT, else benchmarks/results/gpu_check/)")
    parser.add_argument("--sections", nargs="+", choices=[s.name for s in SECTIONS], help="run only these")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="global deadline from the start (default 420, smoke 240): optional sections that no "
                             "longer fit and every section after it are skipped")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: smoke 1, else torch's)")
    parser.add_argument("--commit", help="commit to record in the report (default: git's, where there is a .git)")
    parser.add_argument("--hard-cap", action="append", default=[], metavar="SECTION=SECONDS",
                        help="kill a section's worker after this long (default 1.5 x budget + 20 s)")
    parser.add_argument("--inject-fault", action="append", default=[], metavar="SECTION:raise|hang|exit",
                        help="make a section fail, to test the guards")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--events", help=argparse.SUPPRESS)
    parser.add_argument("--deadline-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for item in args.inject_fault:
        name, _, kind = item.partition(":")
        if name not in SECTION_BY_NAME or kind not in ("raise", "hang", "exit"):
            parser.error(f"--inject-fault {item!r}: expected SECTION:raise|hang|exit")
    for item in args.hard_cap:
        name, _, seconds = item.partition("=")
        if name not in SECTION_BY_NAME or not seconds.replace(".", "", 1).isdigit():
            parser.error(f"--hard-cap {item!r}: expected SECTION=SECONDS")
    if args.threads is None:
        args.threads = 1 if args.smoke else 0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    if args.device is None:
        if args.smoke:
            args.device = "cpu"
        else:
            import torch  # the parent needs torch only to pick the device

            if not torch.cuda.is_available():
                print("gpu_check: no CUDA device here; the full profile needs one. Use --smoke (tiny CPU mode) or "
                      "--device cpu to force it.", file=sys.stderr)
                return 2
            args.device = "cuda"
    args.out = args.out or default_out()
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
