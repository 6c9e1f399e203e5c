"""Hypothesis strategies for bad parameters: wrong types, out-of-range numbers, unknown names."""

from __future__ import annotations

import string
from collections.abc import Iterable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Values of the wrong type for an int / float / str / mapping parameter.
# Booleans are included on purpose: `True` is an int to Python but never a valid count or seed.
not_a_number = st.one_of(
    st.text(max_size=8),
    st.none(),
    st.booleans(),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=4), st.integers(), max_size=2),
)
not_an_int = st.one_of(not_a_number, st.floats().filter(lambda f: not f.is_integer()))  # 2.5, nan, inf
not_a_string = st.one_of(st.integers(), st.floats(allow_nan=False), st.none(), st.booleans(),
                         st.lists(st.text(max_size=3), max_size=2))
not_a_mapping = st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2), st.booleans())
non_positive_int = st.integers(max_value=0)
bad_positive_int = st.one_of(non_positive_int, not_an_int)
identifier = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)


def unknown_name(valid: Iterable[str]) -> st.SearchStrategy[str]:
    """A string that is not one of `valid` (plausible typos included)."""
    valid = set(valid)
    typos = [v + "x" for v in valid] + [v.upper() for v in valid if v.upper() not in valid] + [" " + v for v in valid]
    return st.one_of(st.sampled_from(sorted(typos)), st.text(max_size=10)).filter(lambda s: s not in valid)


def unknown_key(valid: Iterable[str]) -> st.SearchStrategy[str]:
    valid = set(valid)
    return identifier.filter(lambda s: s not in valid)


def bounded(max_examples: int = 30) -> settings:
    """The suite's Hypothesis budget: few examples, no deadline (shared 2-core CI), no example database
    (failures are reproduced from the printed example), fixtures shared across examples on purpose, and
    derandomised so CI runs the same examples every time."""
    return settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
