"""`fedchain device --mode buffered`'s streaming options become the sensor's StreamSettings, or a clear refusal."""

from __future__ import annotations

import pytest
import typer

from fedchain.cli.roles import _stream_settings
from fedchain.device.sensor import StreamSettings


def test_no_buffer_no_stream() -> None:
    assert _stream_settings(0, 1.0, 0.0, "nan", 1, None) is None


def test_the_options_become_the_sensor_s_settings() -> None:
    got = _stream_settings(400, 1000.0, 0.15, "nan, short,rate", 5, 0.5)
    assert got == StreamSettings(400, 1000.0, 0.15, ("nan", "short", "rate"), 5, 0.5)


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        ((10, 1.0, 0.0, "nan,melted", 1, None), "--sensor-faults"),
        ((10, 1.0, 0.0, "", 1, None), "--sensor-faults"),
        ((10, 1.0, 0.0, "nan", 0, None), "--stream-min-new"),
        ((10, 1.0, 0.0, "nan", 1, 1.0), "--drift-at"),
        ((0, 1.0, 0.2, "nan", 1, None), "--sensor-fault-rate/--drift-at"),
        ((0, 1.0, 0.0, "nan", 1, 0.5), "--sensor-fault-rate/--drift-at"),
    ],
)
def test_bad_options_are_refused_naming_the_option(args: tuple, hint: str) -> None:
    with pytest.raises(typer.BadParameter) as refused:
        _stream_settings(*args)
    assert refused.value.param_hint == hint
