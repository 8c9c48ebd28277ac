"""BufferedTask: configuration, asynchronous submissions over several versions, every refusal of submitUpdate, and
devices joining and leaving mid-run (issue 15 part 3)."""

import pytest
from brownie import accounts as brownie_accounts
from buffered_helpers import (
    BUFFER_SIZE,
    FEDBUFF_EXPONENT_MICRO,
    MAX_SAMPLES,
    MAX_STALENESS,
    WEIGHTING_POLYNOMIAL,
    AggPhase,
    BufferStatus,
    Status,
    aggregate,
    aggregation,
    buffer_hash,
    buffer_info,
    buffered_container,
    buffered_reverts,
    deploy_buffered,
    digest,
    entry,
    filling,
    make_config,
    submit,
)


@pytest.fixture(scope="module")
def admin(accounts):
    return accounts[0]


@pytest.fixture(scope="module")
def agg(accounts):
    return accounts[1]


@pytest.fixture(scope="module")
def devs(accounts):
    """Five devices (K = 3, so two buffers can fill at once without a device submitting twice to one)."""
    return [accounts[2], accounts[3], accounts[4], accounts[5], accounts[8]]


@pytest.fixture(scope="module")
def outsider(accounts):
    return accounts[9]


@pytest.fixture(scope="module")
def task(admin, agg, devs):
    return deploy_buffered(admin, [agg], devs)


def fill(task, devices, base, label):
    """Each device submits once from `base`; returns the entries as the contract should record them."""
    return [submit(task, d, base, f"{label}-{i}")[1] for i, d in enumerate(devices)]


# ---------------------------------------------------------------- configuration


def test_config_views(admin, agg, devs):
    task = deploy_buffered(admin, [agg], devs, start=False)
    assert task.bufferSize() == BUFFER_SIZE
    assert task.maxStaleness() == MAX_STALENESS
    assert task.maxSamplesPerUpdate() == MAX_SAMPLES
    assert tuple(task.stalenessWeighting()) == (WEIGHTING_POLYNOMIAL, FEDBUFF_EXPONENT_MICRO)
    assert task.currentVersion() == 0
    assert bytes(task.versionDigest(0)) == digest("model-0")
    assert bytes(task.globalModelDigest()) == digest("model-0")
    assert filling(task)["status"] == Status.Registering and filling(task)["buffer"] == 0
    assert task.deviceCount() == len(devs) and task.aggregatorCount() == 1


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"numVersions": 0}, "numVersions is 0"),
        ({"bufferSize": 0}, "bufferSize"),
        ({"bufferSize": 65}, "bufferSize"),
        ({"maxSamplesPerUpdate": 0}, "maxSamplesPerUpdate is 0"),
        ({"weightingId": 2}, "weightingId"),
        ({"weightingParamMicro": 0}, "weightingParamMicro is 0"),
        ({"aggregatorThreshold": 0}, "aggregatorThreshold"),
        ({"aggregationDuration": 0}, "aggregationDuration is 0"),
        ({"maxAggregationAttempts": 0}, "maxAggregationAttempts is 0"),
        ({"maxAggregatorFaults": 0}, "maxAggregatorFaults is 0"),
        ({"initialModelDigest": b"\x00" * 32}, "empty digest"),
    ],
)
def test_invalid_config(admin, overrides, reason):
    with buffered_reverts("InvalidConfig", reason):
        buffered_container().deploy(make_config(**overrides), admin, {"from": admin})


def test_constant_weighting_needs_no_parameter(admin):
    task = buffered_container().deploy(make_config(weightingId=0, weightingParamMicro=0), admin, {"from": admin})
    assert tuple(task.stalenessWeighting()) == (0, 0)


def test_start_needs_a_majority_threshold(admin, agg, accounts):
    task = deploy_buffered(admin, [], [], start=False, aggregatorThreshold=2)
    with buffered_reverts("ThresholdOutOfRange", 2, 0):
        task.start({"from": admin})
    for account in (agg, accounts[6], accounts[7], accounts[8]):
        task.grantRole(task.AGGREGATOR_ROLE(), account, {"from": admin})
    with buffered_reverts("ThresholdOutOfRange", 2, 4):  # n = 2k: two disjoint pairs could both reach k
        task.start({"from": admin})


# ---------------------------------------------------------------- the asynchronous happy path


def test_versions_from_different_base_versions(task, devs, agg):
    """Four versions; devices train from whatever version they fetched, submitting while earlier buffers are being
    aggregated. Every entry, its staleness and every buffer's inputs hash are checked against a Python mirror."""
    d0, d1, d2, d3, d4 = devs
    tx = task.submitUpdate(0, digest("b1-0"), 120, {"from": d0})
    assert tx.events["UpdateBuffered"][0]["position"] == 0
    b1 = [(d0.address, digest("b1-0"), 120, 0, 0)]
    b1 += fill(task, [d1, d2], 0, "b1")
    # buffer 1 is full and goes to aggregation at once; buffer 2 opens on version 0
    assert buffer_info(task, 1)["status"] == BufferStatus.Aggregating
    assert buffer_info(task, 1)["inputsHash"] == buffer_hash(task.address, 1, b1)
    assert aggregation(task)["buffer"] == 1 and aggregation(task)["phase"] == AggPhase.Committing
    assert filling(task)["buffer"] == 2 and filling(task)["count"] == 0
    assert [entry(task, 1, i) for i in range(3)] == b1

    # while buffer 1 is aggregated, two devices (one of them already in buffer 1) submit into buffer 2
    b2 = fill(task, [d3, d0], 0, "b2")
    _, tx = aggregate(task, [agg], 1)
    published = tx.events["VersionPublished"][0]
    assert published["version"] == 1 and published["buffer"] == 1
    assert bytes(published["inputsHash"]) == buffer_hash(task.address, 1, b1)
    assert task.currentVersion() == 1 and bytes(task.versionDigest(1)) == digest("model-b1")
    assert buffer_info(task, 1) == {
        "status": BufferStatus.Published,
        "count": 3,
        "inputsHash": buffer_hash(task.address, 1, b1),
        "version": 1,
    }
    assert aggregation(task)["phase"] == AggPhase.Idle  # buffer 2 is not full

    # d4 trained from version 1 (staleness 0); the earlier entries of buffer 2 keep the staleness of their time
    tx, e = submit(task, d4, 1, "b2-late")
    b2.append(e)
    assert tx.events["UpdateBuffered"][0]["staleness"] == 0
    assert "BufferFull" in tx.events and "AggregationOpened" in tx.events
    assert tx.events["AggregationOpened"][0]["version"] == 1
    assert [entry(task, 2, i) for i in range(3)] == b2
    assert bytes(tx.events["BufferFull"][0]["inputsHash"]) == buffer_hash(task.address, 2, b2)

    # buffer 3: a device still on version 0 (staleness 1), one on version 1
    b3 = fill(task, [d1], 0, "b3") + fill(task, [d2], 1, "b3x")
    assert [e[4] for e in b3] == [1, 0]
    aggregate(task, [agg], 2)
    assert task.currentVersion() == 2
    b3 += fill(task, [d3], 2, "b3y")
    assert buffer_info(task, 3)["status"] == BufferStatus.Aggregating
    assert buffer_info(task, 3)["version"] == 2  # builds on version 2
    aggregate(task, [agg], 3)
    assert task.currentVersion() == 3
    assert [bytes(task.versionDigest(v)) for v in range(4)] == [
        digest("model-0"),
        digest("model-b1"),
        digest("model-b2"),
        digest("model-b3"),
    ]
    # buffer 1's entries left the ring (buffer 3 reused it); buffer 3's are still there
    with buffered_reverts("EntryNotAvailable", 1, 0):
        task.bufferEntry(1, 0)
    assert [entry(task, 3, i) for i in range(3)] == b3


def test_buffers_full_then_released(task, devs, agg):
    """One pending and one full buffer: a further submission is refused with BuffersFull, and accepted again once
    the pending buffer is published (the full buffer then goes to aggregation and a new one opens)."""
    d0, d1, d2, d3, d4 = devs
    fill(task, [d0, d1, d2], 0, "b1")
    fill(task, [d3, d4, d0], 0, "b2")
    assert filling(task)["buffer"] == 2 and filling(task)["count"] == BUFFER_SIZE
    assert buffer_info(task, 2)["status"] == BufferStatus.Full
    with buffered_reverts("BuffersFull", 2, 1):
        task.submitUpdate(0, digest("x"), 10, {"from": d1})
    _, tx = aggregate(task, [agg], 1)
    assert tx.events["AggregationOpened"][0]["buffer"] == 2
    assert tx.events["BufferOpened"][0]["buffer"] == 3
    assert buffer_info(task, 2)["status"] == BufferStatus.Aggregating
    submit(task, d1, 1, "b3")
    assert filling(task)["buffer"] == 3 and filling(task)["count"] == 1


def test_task_finishes_after_num_versions(admin, agg, devs):
    task = deploy_buffered(admin, [agg], devs, numVersions=2)
    fill(task, devs[:3], 0, "b1")
    aggregate(task, [agg], 1)
    fill(task, devs[:3], 1, "b2")
    _, tx = aggregate(task, [agg], 2)
    assert tx.events["TaskFinished"][0]["versions"] == 2
    assert filling(task)["status"] == Status.Finished
    with buffered_reverts("TaskNotRunning", Status.Finished):
        task.submitUpdate(2, digest("late"), 10, {"from": devs[3]})


# ---------------------------------------------------------------- refusals


def test_refused_before_start_and_after_cancel(admin, agg, devs):
    task = deploy_buffered(admin, [agg], devs, start=False)
    with buffered_reverts("TaskNotRunning", Status.Registering):
        task.submitUpdate(0, digest("u"), 10, {"from": devs[0]})
    task.start({"from": admin})
    task.cancel({"from": admin})
    with buffered_reverts("TaskNotRunning", Status.Cancelled):
        task.submitUpdate(0, digest("u"), 10, {"from": devs[0]})


def test_refused_empty_digest_and_sample_counts(task, devs):
    with buffered_reverts("EmptyDigest"):
        task.submitUpdate(0, b"\x00" * 32, 10, {"from": devs[0]})
    with buffered_reverts("ZeroSamples"):
        task.submitUpdate(0, digest("u"), 0, {"from": devs[0]})
    with buffered_reverts("TooManySamples", MAX_SAMPLES + 1, MAX_SAMPLES):
        task.submitUpdate(0, digest("u"), MAX_SAMPLES + 1, {"from": devs[0]})
    task.submitUpdate(0, digest("u"), MAX_SAMPLES, {"from": devs[0]})  # the cap itself is accepted


def test_refused_unapproved_device(task, outsider):
    with buffered_reverts("NotApprovedDevice", outsider.address):
        task.submitUpdate(0, digest("u"), 10, {"from": outsider})


def test_refused_future_version(task, devs):
    with buffered_reverts("UnknownVersion", 1, 0):
        task.submitUpdate(1, digest("u"), 10, {"from": devs[0]})
    with buffered_reverts("UnknownVersion", 2**32 - 1, 0):
        task.submitUpdate(2**32 - 1, digest("u"), 10, {"from": devs[0]})


def test_refused_too_stale(task, devs, agg):
    """maxStaleness = 2: from version 3 on an update trained from version 0 is refused; from version 1 accepted."""
    for v in range(1, 4):
        fill(task, devs[:3], v - 1, f"b{v}")
        aggregate(task, [agg], v)
    assert task.currentVersion() == 3
    with buffered_reverts("TooStale", 0, 3, MAX_STALENESS):
        task.submitUpdate(0, digest("old"), 10, {"from": devs[3]})
    tx, _ = submit(task, devs[3], 1, "ok")
    assert tx.events["UpdateBuffered"][0]["staleness"] == 2


def test_refused_second_update_in_one_buffer(task, devs):
    task.submitUpdate(0, digest("first"), 10, {"from": devs[0]})
    with buffered_reverts("AlreadyBuffered", devs[0].address, 1):
        task.submitUpdate(0, digest("second"), 10, {"from": devs[0]})


def test_refusal_order(task, outsider):
    """The documented order: an unapproved device with a future base version hears NotApprovedDevice; an empty
    digest comes before the sample count."""
    with buffered_reverts("NotApprovedDevice", outsider.address):
        task.submitUpdate(5, digest("u"), 10, {"from": outsider})
    with buffered_reverts("EmptyDigest"):
        task.submitUpdate(5, b"\x00" * 32, 0, {"from": outsider})


def test_entry_view_bounds(task, devs):
    submit(task, devs[0], 0, "a")
    with buffered_reverts("EntryNotAvailable", 1, 1):
        task.bufferEntry(1, 1)
    with buffered_reverts("EntryNotAvailable", 2, 0):
        task.bufferEntry(2, 0)
    with buffered_reverts("EntryNotAvailable", 0, 0):
        task.bufferEntry(0, 0)


# ---------------------------------------------------------------- devices joining and leaving mid-run


def test_device_joins_and_leaves_mid_run(task, admin, agg, devs):
    d0, d1, d2, d3, _ = devs
    newcomer = brownie_accounts.add()
    admin.transfer(newcomer, "1 ether")
    fill(task, [d0, d1, d2], 0, "b1")
    aggregate(task, [agg], 1)

    # a device joins at version 1 and submits at once from it
    tx = task.approveDevices([newcomer], {"from": admin})
    assert tx.events["DeviceApproved"][0]["version"] == 1
    assert tuple(task.deviceInfo(newcomer)) == (True, 0, 1)
    submit(task, newcomer, 1, "new")

    # d3 buffers an update, then leaves: its update stays in the buffer, it can submit nothing more
    submit(task, d3, 0, "d3")
    tx = task.removeDevice(d3, {"from": d3})
    assert tx.events["DeviceRemoved"][0]["by"] == d3.address
    assert entry(task, 2, 1)[0] == d3.address
    # d1 is revoked by the admin
    task.removeDevice(d1, {"from": admin})
    assert task.deviceCount() == 4  # five + newcomer - two
    with buffered_reverts("NotApprovedDevice", d1.address):
        task.submitUpdate(1, digest("revoked"), 10, {"from": d1})
    # the buffer still fills from the devices left and is published with the leaver's entry in it
    fill(task, [d2], 1, "b2")
    assert buffer_info(task, 2)["status"] == BufferStatus.Aggregating
    aggregate(task, [agg], 2)
    assert task.currentVersion() == 2
    # the revoked device comes back
    task.approveDevices([d1], {"from": admin})
    submit(task, d1, 2, "back")


def test_remove_device_needs_admin_or_itself(task, devs, outsider):
    with buffered_reverts("AccessControlUnauthorizedAccount", outsider.address, b"\x00" * 32):
        task.removeDevice(devs[0], {"from": outsider})
    with buffered_reverts("NotApprovedDevice", outsider.address):
        task.removeDevice(outsider, {"from": outsider})
