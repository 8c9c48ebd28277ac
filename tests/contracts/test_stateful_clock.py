"""The state machines' clock after a revert: Anvil restarts its clock at the snapshot's time, brownie would keep the
wall clock; `revert_to_snapshot` re-anchors brownie on the chain (a machine that ran longer than a round's duration
once predicted deadlines passed that the chain had not reached)."""

import time

import brownie
from stateful_helpers import now, revert_to_snapshot

WALL_SECONDS = 3


def test_now_follows_the_chain_after_a_revert():
    brownie.chain.mine()
    brownie.chain.snapshot()
    time.sleep(WALL_SECONDS)  # the examples before this one ran for a while
    revert_to_snapshot()
    predicted = now()
    brownie.chain.mine()
    assert abs(brownie.chain[-1].timestamp - predicted) <= 1, (brownie.chain[-1].timestamp, predicted)
