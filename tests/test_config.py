"""The one config mechanism: typed nested dataclasses from parameters, errors naming the key path."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from diffdistill.config import ConfigError, build, option, to_dict


@dataclass
class Inner:
    steps: int = option(10, min=1)
    variant: str = option("reference", choices=("reference", "eq12"))
    scale: float = option(1.0, gt=0)


@dataclass
class Outer:
    name: str = "x"
    lr: float | None = None
    sizes: tuple[int, ...] = (1, 2)
    inner: Inner = field(default_factory=Inner)
    extra: dict[str, float] = field(default_factory=dict)

    def check(self, path: str) -> None:
        if self.lr is not None and self.lr > 10 * self.inner.steps:
            raise ConfigError(f"{path}.lr={self.lr} is more than 10 x {path}.inner.steps")


def test_builds_nested_sections_with_conversions():
    made = build(Outer, {"lr": 3, "sizes": [4, 5], "inner": {"steps": 20}, "extra": {"a": 1}}, "top")
    assert made == Outer(lr=3.0, sizes=(4, 5), inner=Inner(steps=20), extra={"a": 1.0})
    assert isinstance(made.lr, float) and build(Outer, to_dict(made), "top") == made
    assert build(Outer, None, "top") == Outer() and build(Outer, made, "top") is made


@pytest.mark.parametrize(("params", "message"), [
    ({"bogus": 1}, r"unknown key top.bogus; valid keys: extra, inner, lr, name, sizes"),
    ({"inner": {"stepz": 1}}, r"unknown key top.inner.stepz; valid keys: scale, steps, variant"),
    ({"inner": {"variant": "paper"}}, r"top.inner.variant='paper' is not one of reference, eq12"),
    ({"inner": {"steps": 0}}, r"top.inner.steps=0 must be >= 1"),
    ({"inner": {"steps": True}}, r"top.inner.steps=True must be an int"),
    ({"inner": {"scale": float("nan")}}, r"top.inner.scale=nan must be a finite number"),
    ({"inner": 3}, r"top.inner must be a mapping of its settings"),
    ({"sizes": "12"}, r"top.sizes='12' must be a list of an int"),
    ({"sizes": [1, "a"]}, r"top.sizes\[1\]='a' must be an int"),
    ({"lr": "fast"}, r"top.lr='fast' must be a finite number"),
    ({"lr": 500}, r"top.lr=500.0 is more than 10 x top.inner.steps"),
])
def test_errors_name_the_key_path_and_what_to_change(params, message):
    with pytest.raises(ConfigError, match=message):
        build(Outer, params, "top")


@dataclass
class Required:
    batch_size: int = option(min=1)
    seed: int = option()
    min_std: float | None = None


def test_fields_without_default_are_required_and_named_when_missing():
    assert build(Required, {"batch_size": 2, "seed": 0}, "gaussians") == Required(2, 0)
    with pytest.raises(ConfigError, match=r"missing key gaussians.seed; add it to conf/base/parameters\*.yml"):
        build(Required, {"batch_size": 2}, "gaussians")
    with pytest.raises(ConfigError, match=r"missing keys gaussians.batch_size, gaussians.seed; add them"):
        build(Required, None, "gaussians")
