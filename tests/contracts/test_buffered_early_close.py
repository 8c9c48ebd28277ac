"""BufferedTask's early close: with bufferDuration set, a partly filled buffer (sleeping devices) goes to aggregation
once it has been filling that long with at least minBufferSize updates, while no other buffer is pending."""

import pytest
from brownie import chain
from buffered_helpers import (
    BUFFER_SIZE,
    AggPhase,
    BufferStatus,
    aggregate,
    aggregation,
    buffer_hash,
    buffer_info,
    buffered_container,
    buffered_reverts,
    deploy_buffered,
    filling,
    make_config,
    submit,
)
from stateful_helpers import reverts_named

DURATION = 600
MIN_SIZE = 2


@pytest.fixture(scope="module")
def admin(accounts):
    return accounts[0]


@pytest.fixture(scope="module")
def agg(accounts):
    return accounts[1]


@pytest.fixture(scope="module")
def devs(accounts):
    return [accounts[2], accounts[3], accounts[4], accounts[5], accounts[8]]


@pytest.fixture(scope="module")
def task(admin, agg, devs):
    return deploy_buffered(admin, [agg], devs, bufferDuration=DURATION, minBufferSize=MIN_SIZE)


@pytest.mark.parametrize("min_size", [0, BUFFER_SIZE + 1])
def test_min_buffer_size_must_fit(admin, min_size):
    with buffered_reverts("InvalidConfig", "minBufferSize"):
        buffered_container().deploy(make_config(bufferDuration=60, minBufferSize=min_size), admin, {"from": admin})


def test_disabled_without_duration(admin, agg, devs):
    task = deploy_buffered(admin, [agg], devs)
    submit(task, devs[0], 0, "a")
    submit(task, devs[1], 0, "b")
    chain.sleep(10 * DURATION)
    with buffered_reverts("EarlyCloseDisabled"):
        task.closeBuffer(1, {"from": devs[0]})


def test_early_close_of_a_partly_filled_buffer(task, devs, agg):
    entries = [submit(task, devs[0], 0, "a")[1]]
    with buffered_reverts("TooFewUpdates", 1, MIN_SIZE):
        task.closeBuffer(1, {"from": devs[4]})
    entries.append(submit(task, devs[1], 0, "b")[1])
    with reverts_named("DeadlineNotReached"):
        task.closeBuffer(1, {"from": devs[4]})
    with buffered_reverts("WrongBuffer", 1, 2):
        task.closeBuffer(2, {"from": devs[4]})
    chain.sleep(DURATION + 1)
    tx = task.closeBuffer(1, {"from": devs[4]})  # anyone may call it
    assert bytes(tx.events["BufferFull"]["inputsHash"]) == buffer_hash(task.address, 1, entries)
    assert tx.events["AggregationOpened"]["buffer"] == 1
    assert buffer_info(task, 1)["status"] == BufferStatus.Aggregating and buffer_info(task, 1)["count"] == 2
    assert filling(task)["buffer"] == 2 and int(task.fillingOpenedAt()) == tx.timestamp
    # the next buffer fills while the early-closed one is aggregated; it cannot be closed early meanwhile
    submit(task, devs[2], 0, "c")
    submit(task, devs[3], 0, "d")
    chain.sleep(DURATION + 1)
    with buffered_reverts("BufferPending", 1):
        task.closeBuffer(2, {"from": devs[4]})
    result, tx = aggregate(task, [agg], 1)
    assert result.accepted == 2 and task.currentVersion() == 1
    assert aggregation(task)["phase"] == AggPhase.Idle  # buffer 2 has 2 of 3: it waits for a third or a close
    # buffer 2 opened more than bufferDuration ago: it may be closed at once now that nothing is pending
    task.closeBuffer(2, {"from": devs[4]})
    assert aggregation(task)["buffer"] == 2
    aggregate(task, [agg], 2)
    assert task.currentVersion() == 2


def test_early_close_refused_when_not_running(task, admin, devs):
    submit(task, devs[0], 0, "a")
    submit(task, devs[1], 0, "b")
    chain.sleep(DURATION + 1)
    task.cancel({"from": admin})
    with buffered_reverts("TaskNotRunning", 3):
        task.closeBuffer(1, {"from": devs[0]})


def test_full_buffer_needs_no_close(task, devs):
    for i in range(BUFFER_SIZE):
        submit(task, devs[i], 0, f"u{i}")
    assert buffer_info(task, 1)["status"] == BufferStatus.Aggregating  # it went to aggregation by itself
    with buffered_reverts("BufferPending", 1):  # checked before the (zero) count of buffer 2
        task.closeBuffer(2, {"from": devs[0]})
