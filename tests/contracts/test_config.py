"""Constructor: configuration checks, the TaskConfigured event, immutables and the initial state."""

import pytest
from conftest import (
    AGGREGATION_DURATION,
    AGGREGATOR_ROLE,
    AGGREGATOR_THRESHOLD,
    DEFAULT_ADMIN_ROLE,
    MAX_AGGREGATORS,
    ZERO_ADDRESS,
    ZERO_BYTES32,
    Phase,
    aggregation_state,
    device_info,
    digest,
    make_config,
    reverts_with,
    round_state,
)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"modelSpecDigest": ZERO_BYTES32}, "empty digest"),
        ({"initialModelDigest": ZERO_BYTES32}, "empty digest"),
        ({"modelSpecDigest": ZERO_BYTES32, "initialModelDigest": ZERO_BYTES32}, "empty digest"),
        ({"numRounds": 0}, "numRounds is 0"),
        ({"minUpdates": 0}, "minUpdates is 0"),
        ({"minUpdates": 0, "maxUpdates": 0}, "minUpdates is 0"),
        ({"minUpdates": 3, "maxUpdates": 2}, "maxUpdates < minUpdates"),
        ({"roundDuration": 0}, "roundDuration is 0"),
        ({"aggregatorThreshold": 0}, "aggregatorThreshold is 0"),
        ({"aggregatorThreshold": MAX_AGGREGATORS + 1}, "aggregatorThreshold > MAX_AGGREGATORS"),
        ({"aggregatorThreshold": 2**16 - 1}, "aggregatorThreshold > MAX_AGGREGATORS"),
        ({"aggregationDuration": 0}, "aggregationDuration is 0"),
        ({"aggregatorThreshold": 0, "aggregationDuration": 0}, "aggregatorThreshold is 0"),
    ],
)
def test_invalid_config_reverts(federated_task, admin, overrides, reason):
    with reverts_with("InvalidConfig", reason):
        federated_task.deploy(make_config(**overrides), admin, {"from": admin})


def test_zero_admin_reverts(federated_task, admin):
    with reverts_with("InvalidConfig", "admin is zero"):
        federated_task.deploy(make_config(), ZERO_ADDRESS, {"from": admin})


def test_checks_run_in_declared_order(federated_task, admin):
    """Several bad fields: the first check in the constructor wins."""
    with reverts_with("InvalidConfig", "numRounds is 0"):
        federated_task.deploy(make_config(numRounds=0, roundDuration=0), ZERO_ADDRESS, {"from": admin})
    with reverts_with("InvalidConfig", "roundDuration is 0"):
        federated_task.deploy(make_config(roundDuration=0, aggregatorThreshold=0), admin, {"from": admin})
    with reverts_with("InvalidConfig", "aggregationDuration is 0"):
        federated_task.deploy(make_config(aggregationDuration=0), ZERO_ADDRESS, {"from": admin})


@pytest.mark.parametrize("threshold", [1, 2, MAX_AGGREGATORS])
def test_threshold_bounds_are_valid(federated_task, admin, threshold):
    """k may be anything from 1 to MAX_AGGREGATORS (it may exceed the aggregators granted so far)."""
    contract = federated_task.deploy(
        make_config(aggregatorThreshold=threshold, aggregationDuration=1), admin, {"from": admin}
    )
    assert contract.aggregatorThreshold() == threshold
    assert contract.aggregationDuration() == 1


@pytest.mark.parametrize("overrides", [{"minUpdates": 1, "maxUpdates": 1}, {"minUpdates": 4, "maxUpdates": 4}])
def test_boundary_configs_are_valid(federated_task, admin, overrides):
    """maxUpdates == minUpdates and single-round, one-second tasks are accepted."""
    contract = federated_task.deploy(make_config(numRounds=1, roundDuration=1, **overrides), admin, {"from": admin})
    assert contract.maxUpdates() == contract.minUpdates() == overrides["minUpdates"]


@pytest.fixture
def configured(federated_task, admin, accounts):
    """A task with every configuration field distinct, deployed by someone other than its admin."""
    config = make_config(
        modelSpecDigest=digest("spec-x"),
        initialModelDigest=digest("init-x"),
        numRounds=5,
        minUpdates=2,
        maxUpdates=4,
        roundDuration=1234,
        strategyId=7,
        aggregatorThreshold=3,
        aggregationDuration=4321,
    )
    contract = federated_task.deploy(config, admin, {"from": accounts[8]})
    return contract


def test_task_configured_event(configured, admin):
    event = configured.tx.events["TaskConfigured"]
    assert len(configured.tx.events["TaskConfigured"]) == 1
    assert event["admin"] == admin
    assert bytes(event["modelSpecDigest"]) == digest("spec-x")
    assert bytes(event["initialModelDigest"]) == digest("init-x")
    assert event["numRounds"] == 5
    assert event["minUpdates"] == 2
    assert event["maxUpdates"] == 4
    assert event["roundDuration"] == 1234
    assert event["strategyId"] == 7
    assert event["aggregatorThreshold"] == 3
    assert event["aggregationDuration"] == 4321
    # the two new fields are appended after strategyId
    assert list(event.keys())[-3:] == ["strategyId", "aggregatorThreshold", "aggregationDuration"]


def test_immutables(configured):
    assert bytes(configured.modelSpecDigest()) == digest("spec-x")
    assert bytes(configured.initialModelDigest()) == digest("init-x")
    assert configured.numRounds() == 5
    assert configured.minUpdates() == 2
    assert configured.maxUpdates() == 4
    assert configured.roundDuration() == 1234
    assert configured.strategyId() == 7
    assert configured.aggregatorThreshold() == 3
    assert configured.aggregationDuration() == 4321
    assert configured.MAX_AGGREGATORS() == MAX_AGGREGATORS


def test_roles(configured, admin, accounts):
    assert bytes(configured.DEFAULT_ADMIN_ROLE()) == DEFAULT_ADMIN_ROLE
    assert bytes(configured.AGGREGATOR_ROLE()) == AGGREGATOR_ROLE
    assert configured.hasRole(DEFAULT_ADMIN_ROLE, admin)
    # the deployer is not the admin and gets nothing
    assert not configured.hasRole(DEFAULT_ADMIN_ROLE, accounts[8])
    # nobody is an aggregator until the admin says so; the admin role administers the aggregator role
    assert not configured.hasRole(AGGREGATOR_ROLE, admin)
    assert bytes(configured.getRoleAdmin(AGGREGATOR_ROLE)) == DEFAULT_ADMIN_ROLE


def test_initial_state(configured, admin):
    state = round_state(configured)
    assert state["round"] == 0
    assert state["phase"] == Phase.Registering
    assert state["deadline"] == 0
    assert state["updates"] == 0
    assert state["totalSamples"] == 0
    assert state["inputsHash"] == b"\x00" * 20
    assert state["globalModel"] == digest("init-x")
    assert bytes(configured.globalModelDigest()) == digest("init-x")
    assert configured.deviceCount() == 0
    assert bytes(configured.roundModelDigest(0)) == ZERO_BYTES32
    assert bytes(configured.roundModelDigest(1)) == ZERO_BYTES32
    assert device_info(configured, admin) == (False, 0, 0)
    assert configured.aggregatorCount() == 0
    assert configured.failedRounds() == 0
    assert bytes(configured.finalResultKey(1)) == ZERO_BYTES32
    assert aggregation_state(configured) == (0, 0, 3, 0)


def test_default_test_config(task):
    """The fixtures' task: one aggregator, k = 1 (conftest's commit_reveal relies on it)."""
    assert task.aggregatorThreshold() == AGGREGATOR_THRESHOLD == 1
    assert task.aggregationDuration() == AGGREGATION_DURATION
    assert task.aggregatorCount() == 1
