"""Parsing search input: every accepted form, and a clear message for everything else."""

from __future__ import annotations

import pytest

from fedchain.explorer.search import MAX_QUERY, Query, SearchError, parse_query

TASK = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
CID = "QmPScwXxfq3Kh98eR15RFj64vGRZGZT1QXyMaD7mjru6bK"
HASH = "0x" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TASK, Query("address", TASK)),
        (TASK.lower(), Query("address", TASK)),
        ("  " + TASK.upper().replace("0X", "0x") + "  ", Query("address", TASK)),
        (HASH, Query("hash", HASH)),
        (HASH.upper().replace("0X", "0x"), Query("hash", HASH)),
        ("0X" + "ab" * 32, Query("hash", HASH)),
        ("42", Query("block", "42")),
        ("#42", Query("block", "42")),
        ("block 0042", Query("block", "42")),
        ("0", Query("block", "0")),
        (CID, Query("cid", CID)),
        (f"{TASK}/3", Query("round", TASK, 3)),
        (f"{TASK.lower()} / 12", Query("round", TASK, 12)),
        (f"{TASK}#3", Query("round", TASK, 3)),
        (f"{TASK} round 3", Query("round", TASK, 3)),
    ],
)
def test_accepted_forms(text: str, expected: Query) -> None:
    assert parse_query(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Empty search"),
        ("   ", "Empty search"),
        ("hello world", "Nothing to search for"),
        ("0x1234", "4 hex digits"),
        ("0x" + "a" * 41, "41 hex digits"),
        ("0xZZZ", "not hexadecimal"),
        ("Qm" + "1" * 44, "not a valid CIDv0"),
        ("QmShort", "not a valid CIDv0"),
        (TASK[:-1] + ("A" if TASK[-1] != "A" else "B"), "checksum"),
        ("x" * (MAX_QUERY + 1), "more than"),
        ("-5", "Nothing to search for"),
        ("<script>alert(1)</script>", "Nothing to search for"),
    ],
)
def test_rejected_input_says_why(text: str, message: str) -> None:
    with pytest.raises(SearchError, match=message) as info:
        parse_query(text)
    assert "Search by" in str(info.value) or "CID" in str(info.value) or "checksum" in str(info.value)


def test_mixed_case_with_a_valid_checksum_is_accepted() -> None:
    assert parse_query(TASK).value == TASK
