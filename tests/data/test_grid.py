"""Image grids: untitled grids keep their layout; titled ones (`set_grid`) carry the set's name, IPC and class
names, drawn the same way on every run."""

from __future__ import annotations

import torch

from diffdistill.data.bundle import TensorBundle
from diffdistill.data.grid import LABEL_PX, MARGIN_PX, PADDING, TITLE_PX, image_grid, set_grid

SIDE = 32  # no upscaling at this size


def bundle(per_class: int, classes: int, names: list[str] | None = None, ipc: int | None = None) -> TensorBundle:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (per_class * classes, 3, SIDE, SIDE), generator=g, dtype=torch.uint8)
    meta = {"class_names": names or [f"class {k}" for k in range(classes)]}
    if ipc is not None:
        meta["ipc"] = ipc
    return TensorBundle({"images": images, "labels": torch.arange(classes).repeat_interleave(per_class)}, meta)


def ink(grid: torch.Tensor) -> torch.Tensor:
    """(H, W) mask of the pixels that are not white."""
    return (grid < 250).any(dim=0)


def test_rows_are_as_wide_as_the_largest_class() -> None:
    ipc1 = image_grid(bundle(1, 10).images, bundle(1, 10).labels)
    assert ipc1.shape == (3, PADDING + 10 * (SIDE + PADDING), PADDING + SIDE + PADDING)  # one column, not ten
    ipc3 = image_grid(bundle(3, 4).images, bundle(3, 4).labels)
    assert ipc3.shape[2] == PADDING + 3 * (SIDE + PADDING)


def test_set_grid_has_a_title_above_and_a_class_name_left_of_each_row() -> None:
    b = bundle(2, 3, names=["airplane", "automobile", "bird"], ipc=2)
    bare = image_grid(b.images, b.labels)
    titled = set_grid(b, "random_ipc2")
    title_height = 2 * (TITLE_PX + 4) + 2 * MARGIN_PX  # two lines: the name, then "IPC 2 · 3 classes"
    assert titled.shape[1] == bare.shape[1] + title_height
    left = titled.shape[2] - bare.shape[2]
    assert left > 2 * MARGIN_PX + 20, "room for the longest class name"
    assert torch.equal(titled[:, title_height:, left:], bare), "the images themselves are unchanged"
    mask = ink(titled)
    assert mask[:title_height].any(), "a title is drawn"
    for row in range(3):  # each row's label is drawn beside it, inside the label column
        centre = title_height + PADDING + row * (SIDE + PADDING) + SIDE // 2
        assert mask[centre - LABEL_PX // 2:centre + LABEL_PX // 2, :left - MARGIN_PX // 2].any(), f"row {row} unlabelled"
    assert torch.equal(set_grid(b, "random_ipc2"), titled), "same set, same pixels"
    assert not torch.equal(set_grid(b, "herding_ipc2")[:, :title_height], titled[:, :title_height])


def test_a_cut_grid_says_how_many_classes_it_shows() -> None:
    b = bundle(1, 30, ipc=1)
    full = set_grid(b, "d3hr_ipc1")
    cut = set_grid(b, "d3hr_ipc1", max_images=12)
    line = TITLE_PX + 4
    rows_dropped = 30 - 12
    assert full.shape[1] - cut.shape[1] == rows_dropped * (SIDE + PADDING) - line  # a third title line, 18 rows fewer


def test_a_real_split_is_titled_with_its_size() -> None:
    b = bundle(5, 2)  # no IPC: a real split
    titled = set_grid(b, "train_set")
    assert titled.shape[1] == image_grid(b.images, b.labels).shape[1] + 2 * (TITLE_PX + 4) + 2 * MARGIN_PX
