"""`fedchain demo`: a whole federated run on a local devnet, one OS process per device plus the aggregator.

`run` (run_demo, composing the rest), `options` (DemoOptions: what runs), `processes` (starting and watching the
device, pool, aggregator and explorer processes), `rounds` (following the rounds, the table and the summary).

The names below are loaded on first use (PEP 562); none of these modules imports torch or web3 at import time:
the demo starts its processes before paying for those imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedchain._lazy import lazy_exports

if TYPE_CHECKING:
    from fedchain.app.demo.options import FIRST_DEVICE_INDEX, DemoOptions, robust_defaults
    from fedchain.app.demo.run import run_demo

_SOURCES = {
    "fedchain.app.demo.options": ("FIRST_DEVICE_INDEX", "DemoOptions", "robust_defaults"),
    "fedchain.app.demo.run": ("run_demo",),
}
__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)
__all__ = ["FIRST_DEVICE_INDEX", "DemoOptions", "robust_defaults", "run_demo"]
