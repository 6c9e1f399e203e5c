"""The definition of a clear error (clarity.py) itself: what it accepts and what it rejects."""

from __future__ import annotations

import pytest
import torch
from kedro.io.core import AbstractDataset, DatasetError

from tests.badinput.clarity import assert_clear_error, why_unclear


def _raise(exc: BaseException):
    def call():
        raise exc
    return call


def test_accepts_a_named_value_error_from_project_code() -> None:
    exc = assert_clear_error(_raise(ValueError("SourceConfig.image_size=7 must be a multiple of 8; change it")),
                             "image_size")
    assert "image_size" in str(exc)


def test_rejects_a_raw_torch_error() -> None:
    with pytest.raises(AssertionError, match="not one of the clear error types|not by project code"):
        assert_clear_error(lambda: torch.zeros(2, 3) @ torch.zeros(2, 3), "weights")


def test_rejects_an_error_raised_inside_a_library_even_with_a_clear_type() -> None:
    import json

    with pytest.raises(AssertionError, match="not by project code"):
        assert_clear_error(lambda: json.loads("{"), "json")  # a ValueError, raised inside the json module


def test_rejects_a_raw_phrase_even_from_project_code() -> None:
    with pytest.raises(AssertionError, match="raw internal phrase"):
        assert_clear_error(lambda: int("abc"), "abc")  # the innermost frame is this (own) file


def test_rejects_a_bare_key_error_and_an_unnamed_message() -> None:
    with pytest.raises(AssertionError, match="too bare"):
        assert_clear_error(lambda: {}["seed"], "seed")
    with pytest.raises(AssertionError, match="does not name"):
        assert_clear_error(_raise(ValueError("the value is wrong; change the configuration")), "image_size")


def test_rejects_no_error() -> None:
    with pytest.raises(AssertionError, match="returned"):
        assert_clear_error(lambda: 3, "x")


class _BrokenDataset(AbstractDataset):
    def load(self):
        return torch.zeros(2, 3) @ torch.zeros(2, 3)

    def save(self, data) -> None:
        raise NotImplementedError

    def _describe(self) -> dict:
        return {"filepath": "a.safetensors"}


def test_dataset_error_raised_by_kedro_is_judged_by_its_cause() -> None:
    with pytest.raises(AssertionError, match="wraps an unclear cause"):
        assert_clear_error(_BrokenDataset().load, "a.safetensors")


def test_quoting_a_raw_cause_after_a_clear_sentence_is_fine() -> None:
    def load():
        try:
            raise ValueError("HeaderTooLarge")
        except ValueError as cause:
            raise DatasetError(f"a.safetensors is not a readable safetensors file ({cause}); re-run the pipeline "
                               "that produces it") from cause

    assert why_unclear(_catch(load), ("a.safetensors",)) is None


def _catch(call) -> BaseException:
    try:
        call()
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("no error")
