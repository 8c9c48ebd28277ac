"""`fedchain bench privacy`'s secure-aggregation measurement on a small case: exact sums, sizes that add up."""

from __future__ import annotations

from fedchain.bench.privacy import _finite, secagg_cost


def test_secagg_cost_small_round() -> None:
    row = secagg_cost(devices=5, params=1000, dropout=0.2)
    assert row["threshold"] == 3 and row["devices"] == 5
    assert row["device_upload_bytes"] == (
        row["setup_bytes"] + row["masked_update_bytes"] + row["aggregator"]["no_dropout"]["reveal_bytes"]
    )
    # A masked update is 4 bytes per parameter, like a float32 update.
    assert abs(row["masked_update_bytes"] - row["plain_update_bytes"]) < 200
    for case in row["aggregator"].values():
        assert case["max_abs_error"] <= 5 * 2**-17  # within the quantisation bound of 5 devices
    assert row["aggregator"]["dropout_20"]["dropped"] == 1


def test_infinity_is_written_as_text() -> None:
    assert _finite({float("inf"): [1.0, float("inf")]}) == {"inf": [1.0, "inf"]}
