"""ABI decoding from raw hex, and the SVG charts."""

from __future__ import annotations

from explorer_fakes import DEVICE_A, TASK, call_data, encode_log

from fedchain.chain.artifacts import load_artifact
from fedchain.explorer.abi import AbiCodec
from fedchain.explorer.charts import Series, bar_chart, line_chart, nice_ticks


def test_calls_and_logs_decode_by_name() -> None:
    codec = AbiCodec(load_artifact("FederatedTask").abi)
    call = codec.decode_call(
        call_data("submitUpdate(uint32,bytes32,uint64)", ["uint32", "bytes32", "uint64"], [3, b"\x07" * 32, 41])
    )
    assert call is not None and call.name == "submitUpdate"
    assert call.args == {"round": 3, "updateDigest": "0x" + "07" * 32, "numSamples": 41}
    assert codec.decode_call("0xdeadbeef") is None
    assert codec.decode_call("0x") is None
    log = encode_log(TASK, "UpdateSubmitted", round=3, device=DEVICE_A, updateDigest=b"\x07" * 32, numSamples=41)
    decoded = codec.decode_log(log["topics"], log["data"])
    assert decoded is not None and decoded.name == "UpdateSubmitted"
    assert decoded.args == {"round": 3, "device": DEVICE_A, "updateDigest": "0x" + "07" * 32, "numSamples": 41}
    assert codec.decode_log(["0x" + "11" * 32], "0x") is None
    assert codec.decode_log(log["topics"][:1], log["data"]) is None  # wrong topic count: not this event
    assert codec.event_types("UpdateSubmitted")["device"] == "address"


def test_charts_are_self_contained_svg() -> None:
    svg = line_chart([Series("accuracy", [(1, 0.5), (2, None), (3, 0.9)])], title="Accuracy")
    assert svg.startswith("<svg") and svg.count("<circle") == 2 and "http://www.w3.org/2000/svg" in svg
    assert "href" not in svg
    bars = bar_chart([(1, 100.0), (2, 250.0)], title="Gas", label="gas")
    assert bars.count("<rect") == 2
    assert "no data yet" in line_chart([Series("x", [(1, None)])], title="Empty")
    ticks = nice_ticks(0.87, 0.91)
    assert ticks[0] <= 0.87 and ticks[-1] >= 0.91 and len(ticks) <= 7
