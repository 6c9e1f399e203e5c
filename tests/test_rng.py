"""One RNG module: every derivation gives the seeds the artifacts were made with (golden values from before the
move into `diffdistill.rng`)."""

from __future__ import annotations

import torch

from diffdistill import rng
from diffdistill.data.sources import make_generator
from diffdistill.distill import d3hr


def test_derive_seed_keeps_its_values_and_folds_paths():
    assert rng.derive_seed(0, 0) == 8286242343226680935
    assert rng.derive_seed(7, 2**40) == 9042416016228693656
    assert rng.derive_seed(3, 2**40, 5) == rng.derive_seed(rng.derive_seed(3, 2**40), 5) == 7317093984616758386
    assert rng.derive_seed(9) == 9
    a, b = rng.generator(3, 1), torch.Generator().manual_seed(rng.derive_seed(3, 1))
    assert torch.equal(torch.randn(4, generator=a), torch.randn(4, generator=b))


def test_the_other_schemes_keep_their_values():
    assert make_generator(5, "train").initial_seed() == rng.named_seed(5, "train") == 3760200883006934313
    assert d3hr.class_seed(0, 3) == 9099806642532500840
    assert d3hr.candidate_seed(d3hr.class_seed(0, 3), "group", 7) == 7825697474717810378
    assert rng.split_seeds(11, 2) == [3325388913236545215, 359254775711865947]
