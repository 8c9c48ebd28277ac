"""Devices join and leave while training goes on: a new device asks to join and is approved mid-task, another is
removed and stops with a clear message, and the rounds carry on."""

from __future__ import annotations

import time

import pytest
from e2e_helpers import Cli, wait_for_phase

from fedchain.chain import EventFollower, Phase, TaskClient, connect, devnet_account

pytestmark = pytest.mark.e2e


def test_device_joins_mid_task_and_another_leaves(cli: Cli) -> None:
    task = cli.deploy(
        "--rounds", "5", "--devices", "2", "--max-updates", "3", "--min-updates", "2", "--round-duration", "4"
    )["task"]
    w3 = connect(cli.state.rpc_url)
    admin = TaskClient.for_account(w3, task, devnet_account(0))
    events = EventFollower(w3, task, admin.abi)
    joiner, leaver = devnet_account(4).address, devnet_account(3).address

    aggregator = cli.spawn("aggregator", "aggregator", "--task", task, "--account", "1")
    stayer = cli.spawn("device-2", "device", "--task", task, "--account", "2", "--partition", "0/3")
    leaving = cli.spawn("device-3", "device", "--task", task, "--account", "3", "--partition", "1/3")
    joining = cli.spawn("device-4", "device", "--task", task, "--account", "4", "--partition", "2/3")

    # The newcomer is not approved: it asks to join; the admin approves it once round 2 is under way.
    deadline = time.monotonic() + 120
    while not any(e.name == "DeviceJoinRequested" for e in events.history("DeviceJoinRequested")):
        assert time.monotonic() < deadline, "the new device never asked to join"
        time.sleep(0.25)
    while admin.current_round().round < 2:
        assert time.monotonic() < deadline, "round 2 never opened"
        time.sleep(0.25)
    admin.approve_devices([joiner])
    approved_in = admin.device_info(joiner).approved_in_round

    # Once the newcomer has submitted, the admin removes another device: it must stop with a clear message.
    while not list(events.history("UpdateSubmitted", device=joiner)):
        assert time.monotonic() < deadline, "the approved device never submitted"
        time.sleep(0.25)
    admin.remove_device(leaver)
    assert leaving.wait(timeout=60) == 2
    assert "removed" in cli.log_text("device-3")

    wait_for_phase(cli.state.rpc_url, task, {Phase.FINISHED}, timeout=240, procs=[aggregator, stayer, joining])
    rounds_of = {
        device: {e.args["round"] for e in events.history("UpdateSubmitted", device=device)}
        for device in (devnet_account(2).address, leaver, joiner)
    }
    assert rounds_of[devnet_account(2).address] == {1, 2, 3, 4, 5}
    assert min(rounds_of[joiner]) >= approved_in >= 2
    assert max(rounds_of[joiner]) == 5
    assert max(rounds_of[leaver]) < 5
