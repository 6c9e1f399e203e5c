"""What a "clear error" is, as one checkable definition for the bad-input suite.

An error on bad input is clear when ALL of these hold:

1. Type: it is a ValueError, TypeError, KeyError, FileNotFoundError or a kedro `DatasetError`
   (subclasses included). A RuntimeError / IndexError / AttributeError / OSError / safetensors
   error escaping from deep inside torch, PIL or diffusers is not.
2. Origin: it was raised by this project's code (the innermost traceback frame lies under
   `src/diffdistill/`, or under `tests/` for a test double), not inside torch, safetensors,
   diffusers, PIL, json or numpy. A `DatasetError` raised by kedro around a failed load/save
   counts by its cause, which must itself be clear; kedro's own cause-less refusals (no
   version found, saving None; `KEDRO_OWN`) are accepted as they are.
3. Names: the message names every expected thing the test passes (a parameter, a file path,
   a tensor), case-insensitively.
4. Not raw: the message is not an internal one. The text of wrapped unclear exceptions is set
   aside; if what remains contains a phrase from `RAW_MARKERS` (what torch / safetensors /
   Python say when a value reaches them unchecked), a clear sentence that names the thing and
   has at least MIN_WORDS + 2 words must come BEFORE it (quoting the underlying error as a
   detail is fine, being only that error is not). Beyond the names, the project's words must
   count at least `MIN_WORDS` words, so a bare `KeyError('seed')` does not pass.

`assert_clear_error(call, *names, case=...)` runs `call`, checks 1-4 and returns the
exception; the test fails with the broken rule otherwise. Tallies: with BADINPUT_LOG=<file>
every check appends {case, clear, reason} as a JSON line; BADINPUT_SURVEY=1 logs without
failing (to measure an older tree, whose package folder goes in BADINPUT_EXTRA_SRC).
"""

from __future__ import annotations

import json
import os
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kedro.io.core import DatasetError

CLEAR_TYPES: tuple[type[BaseException], ...] = (ValueError, TypeError, KeyError, FileNotFoundError, DatasetError)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
OWN_CODE = (PROJECT_ROOT / "src" / "diffdistill", PROJECT_ROOT / "tests",
            # measuring a baseline: another copy of the package (e.g. the tree before the fixes) is also "own"
            *(Path(p).resolve() for p in os.environ.get("BADINPUT_EXTRA_SRC", "").split(os.pathsep) if p))
MIN_WORDS = 4
# kedro raises these itself, with messages that name the dataset and the versions it looked for
KEDRO_OWN = ("did not find any versions", "no versions found", "has not been registered", "not found in the catalog",
             "to a 'dataset' is not allowed")

# What reaches the user when a bad value is passed on unchecked: torch, safetensors, Python builtins.
RAW_MARKERS = (
    "SafetensorError",
    "Error while deserializing header",
    "HeaderTooLarge",
    "HeaderTooSmall",
    "InvalidHeaderDeserialization",
    "MetadataIncompleteBuffer",
    "size mismatch for",
    "Error(s) in loading state_dict",
    "shapes cannot be multiplied",
    "Given groups=",
    "must match the size of tensor",
    "Expected all tensors to be on the same device",
    "not supported between instances of",
    "object has no attribute",
    "unsupported operand type",
    "object is not subscriptable",
    "object is not iterable",
    "'NoneType'",
    "got an unexpected keyword argument",
    "required positional argument",
    "invalid literal for int()",
    "could not convert string to float",
    "cannot identify image file",
    "Expecting value: line",  # bare json.JSONDecodeError
    "unhashable type",
    "index out of range",
    "out of bounds for dimension",
    "received an invalid combination of arguments",
    "argument 'input' (position 1) must be Tensor",
    "Trying to create tensor with negative dimension",
    "integer division or modulo by zero",
    "division by zero",
)


def _innermost_file(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return frames[-1].filename if frames else ""


def _is_own(filename: str) -> bool:
    path = Path(filename).resolve()
    return any(path.is_relative_to(root) for root in OWN_CODE)


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:  # str(KeyError) adds quotes around the key
        return str(exc.args[0])
    return str(exc)


def why_unclear(exc: BaseException, names: tuple[str, ...]) -> str | None:
    """None if `exc` is a clear error naming `names`, else the first rule it breaks."""
    if not isinstance(exc, CLEAR_TYPES):
        return f"type {type(exc).__module__}.{type(exc).__name__} is not one of the clear error types"
    message = _message(exc)
    if isinstance(exc, DatasetError) and not _is_own(_innermost_file(exc)):
        cause = exc.__cause__
        if cause is not None:
            inner = why_unclear(cause, ())
            if inner is not None:
                return f"DatasetError wraps an unclear cause ({inner}): {_message(cause)[:300]}"
        elif not any(marker in message.lower() for marker in KEDRO_OWN):
            return f"DatasetError raised outside the project without a cause: {message[:300]}"
    elif not _is_own(_innermost_file(exc)):
        return f"raised inside {_innermost_file(exc)}, not by project code: {message[:300]}"
    # The project's own words: the message without the text of the unclear exceptions it wraps (quoting
    # the underlying error after a clear sentence is fine; being only that error is not).
    own_words = message
    for cause in _causes(exc):
        if _message(cause) and why_unclear(cause, ()) is not None:  # a clear project error may be re-worded
            own_words = own_words.replace(_message(cause), " ")
    # A raw phrase may follow as a quoted detail, but a clear sentence naming the thing must come before it.
    raw_hits = sorted((own_words.find(m), m) for m in RAW_MARKERS if m in own_words)
    judged = own_words[:raw_hits[0][0]] if raw_hits else own_words
    missing = [name for name in names if name.lower() not in (judged if raw_hits else message).lower()]
    if raw_hits and (missing or len(re.findall(r"[a-z]{2,}", judged.lower())) < MIN_WORDS + 2):
        return (f"message carries the raw internal phrase {raw_hits[0][1]!r} without a clear sentence naming "
                f"{list(names)} before it: {message[:300]}")
    if missing:
        return f"message does not name {missing}: {message[:300]}"
    remainder = judged.lower()
    for name in names:
        remainder = remainder.replace(name.lower(), " ")
    if len(re.findall(r"[a-z]{2,}", remainder)) < MIN_WORDS:
        return f"message is too bare to say what to change: {message!r}"
    return None


def _causes(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
        out.append(exc)
    return out


def _log(case: str, clear: bool, reason: str | None) -> None:
    target = os.environ.get("BADINPUT_LOG")
    if target and case:
        with open(target, "a") as handle:
            handle.write(json.dumps({"case": case, "clear": clear, "reason": reason}) + "\n")


def assert_clear_error(call: Callable[[], Any], *names: str, case: str = "") -> BaseException | None:
    """Run `call`; it must raise a clear error (module docstring) whose message names every `names`.

    With BADINPUT_SURVEY=1 nothing is asserted, only logged (to tally every case of an older tree).
    """
    survey = os.environ.get("BADINPUT_SURVEY") == "1"
    try:
        result = call()
    except Exception as exc:  # noqa: BLE001 - classifying every exception is the point
        reason = why_unclear(exc, names)
        _log(case, reason is None, reason)
        if reason is not None and not survey:
            raise AssertionError(f"[{case}] unclear error: {reason}") from exc
        return exc
    _log(case, False, "no error raised")
    if survey:
        return None
    raise AssertionError(f"[{case}] expected a clear error naming {list(names)}, but the call returned "
                         f"{type(result).__name__}")


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (hidden temporaries included) -> its bytes: compare before / after a failure."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
