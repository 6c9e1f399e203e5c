"""benchmarks/paper_scale_estimate.py: its counting machinery agrees with hand counts, and the DiT it
builds is the published DiT-XL/2 (675 M parameters, 118.6 GFLOPs per forward in the DiT paper's MACs)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_scale_estimate.py"


@pytest.fixture(scope="module")
def estimate():
    spec = importlib.util.spec_from_file_location("paper_scale_estimate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _tiny(batch: int):
    """conv 3->8 (3x3, pad 1) on 8x8, ReLU, linear 512->4: small enough to count by hand."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 4))
    x = torch.empty(batch, 3, 8, 8, device="meta")
    return model, x


def test_flop_counter_matches_hand_count_forward_and_backward(estimate):
    n = 4
    model, x = _tiny(n)
    conv_fwd = 2 * n * 8 * 8 * 8 * (3 * 3 * 3)  # 2 x MACs: outputs x (C_in x k x k)
    linear_fwd = 2 * n * 512 * 4

    forward = estimate.measure(lambda: model(x), n, (model,))
    assert forward.flops_conv == conv_fwd
    assert forward.flops_matmul == linear_fwd

    both = estimate.measure(lambda: model(x).sum().backward(), n, (model,))
    # backward: the conv needs only its weight gradient (x needs no grad) = 1 x forward; the linear needs
    # input and weight gradients = 2 x forward
    assert both.flops_conv == 2 * conv_fwd
    assert both.flops_matmul == 3 * linear_fwd


def test_saved_activations_count_each_storage_once_and_exclude_weights(estimate):
    n = 4
    model, x = _tiny(n)
    unit = estimate.measure(lambda: model(x).sum().backward(), n, (model,))
    # saved for backward: conv's input x, ReLU's output, and the linear's input, which is a view of the
    # ReLU output (one storage); the weights autograd also saves are parameters, counted elsewhere
    assert unit.saved_bytes == 4 * (n * 3 * 8 * 8 + n * 8 * 8 * 8)
    # per-sample parts scale with the batch, per-call parts (dispatched ops, weight reads) do not
    double = unit.cost(2 * n)
    single = unit.cost(n)
    assert double.flops == 2 * single.flops
    assert double.ops == single.ops
    assert unit.saved(2 * n) == 2 * unit.saved_bytes


def test_dit_xl2_matches_the_published_model(estimate):
    dit = estimate.build_dit()
    unique = estimate.dit_unique_params(dit)
    assert unique == pytest.approx(675e6, rel=0.01)  # DiT paper: DiT-XL/2 has 675 M parameters
    # diffusers stores the shared timestep/class embedder once per block: more weights to load than to count
    assert estimate.param_count(dit) > unique * 1.1

    units = estimate.dit_units(dit)
    one_forward = units["dit_guided"].cost(1).flops / 2  # a guided step is two forwards
    assert one_forward / 2 == pytest.approx(118.6e9, rel=0.01)  # DiT Table 4 counts multiply-adds: 118.6 G
    # LD3M's pass 2: the input-only backward of a frozen transformer costs about one more forward
    ratio = units["dit_guided_grad"].cost(1).flops / units["dit_guided"].cost(1).flops
    assert 1.9 < ratio < 2.2


def test_gpu_time_is_the_binding_bound(estimate):
    gpu = estimate.Gpu("test", matmul_peak=1e12, conv_peak=2e12, bandwidth=1e9, memory=1e9, efficiency=0.5,
                       bw_efficiency=1.0, host_s=1e-3)
    compute = estimate.Cost(matmul_flops=1e12, conv_flops=2e12)
    assert gpu.seconds(compute) == pytest.approx((1 + 1) / 0.5)
    assert gpu.seconds(estimate.Cost(bytes_moved=5e9)) == pytest.approx(5.0)
    assert gpu.seconds(compute + estimate.Cost(ops=10_000)) == pytest.approx(10.0)


def test_paper_parameters_merge_over_base(estimate):
    params = estimate.load_params("paper")
    assert params["d3hr"]["group_sampling"]["m"] == 100_000  # conf/paper
    assert params["d3hr"]["group_sampling"]["weights"] == [1.0, 1.0, 0.5]  # kept from conf/base (soft merge)
    assert params["ld3m"]["sampler"]["num_steps"] == 10
    assert params["latents"]["invert_steps"] == 31
