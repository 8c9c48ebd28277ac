"""Canonical JSON: equal values give equal bytes; the two format options change exactly what they say."""

from __future__ import annotations

import json
import math

import pytest

from fedchain.protocol.canonical_json import canonical_json, reject_duplicate_keys


def test_sorted_keys_and_no_whitespace() -> None:
    assert canonical_json({"b": 1, "a": [1.5, {"d": None, "c": True}]}) == b'{"a":[1.5,{"c":true,"d":null}],"b":1}'
    assert canonical_json({"b": 1, "a": 2}) == canonical_json({"a": 2, "b": 1})


def test_utf8_by_default_ascii_escapes_on_request() -> None:
    assert canonical_json({"ε": "µ"}) == '{"ε":"µ"}'.encode()
    assert canonical_json({"ε": "µ"}, ascii_only=True) == b'{"\\u03b5":"\\u00b5"}'


def test_nan_refused_unless_allowed() -> None:
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            canonical_json({"x": bad})
    assert canonical_json([math.nan, math.inf], allow_nan=True) == b"[NaN,Infinity]"


def test_duplicate_keys_are_refused() -> None:
    assert json.loads('{"a":1,"b":2}', object_pairs_hook=reject_duplicate_keys) == {"a": 1, "b": 2}
    with pytest.raises(ValueError, match="duplicate key"):
        json.loads('{"a":1,"a":2}', object_pairs_hook=reject_duplicate_keys)
