"""Relayed batches of EIP-712 signed updates (submitUpdateBatch, updateSigner, verifyBatchEntry) and the
single-aggregator shortcut submitResult.

Signatures, leaves and proofs come from the fedchain binding (fedchain.chain.signing / merkle / batch); the
contract's views must agree with them, and the inputs hash with the Python fold.
"""

import pytest
from brownie import chain
from conftest import (
    AGGREGATOR_ROLE,
    NUM_ROUNDS,
    ZERO_ADDRESS,
    ZERO_BYTES32,
    Phase,
    commit_reveal,
    deploy_task,
    digest,
    make_result,
    reverts_with,
    round_state,
    submit_round,
)
from eth_account import Account
from eth_utils import keccak

from fedchain.chain import batch as client_batch
from fedchain.chain import inputs as client_inputs
from fedchain.chain import merkle, signing

RELAYER_ROLE = keccak(text="RELAYER_ROLE")
MAX_SAMPLES = 2**32 - 1


def signer_accounts(count, label="dev"):
    """Deterministic off-chain device keys: devices that only sign never need funds."""
    return [Account.from_key(keccak(text=f"{label}-{i}")) for i in range(count)]


def signed(task, account, round_index, label, samples, chain_id=None):
    """A SignedUpdate of `account` for the round of `task` (on this chain unless `chain_id`)."""
    d = digest(label)
    sig = signing.sign_update(account, chain_id or chain.id, task.address, round_index, d, samples)
    return client_batch.SignedUpdate(account.address, d, samples, sig)


def make_batch(task, accounts, round_index, label="b", samples=None):
    entries = [
        signed(task, a, round_index, f"{label}-{round_index}-{i}", samples[i] if samples else 50 + i)
        for i, a in enumerate(accounts)
    ]
    return client_batch.make_batch(task.address, chain.id, round_index, entries)


def submit_batch(task, relayer, batch, batch_digest=None):
    return task.submitUpdateBatch(
        batch.round,
        batch_digest or digest(f"file-{batch.root().hex()}"),
        batch.root(),
        len(batch.entries),
        batch.total_samples,
        {"from": relayer},
    )


@pytest.fixture(scope="module")
def relayer(accounts):
    return accounts[8]


@pytest.fixture(scope="module")
def signers():
    return signer_accounts(6)


@pytest.fixture(scope="module")
def batch_task(federated_task, admin, aggregator, devices, relayer, signers):
    """Started; maxUpdates 10; devices[:3] and the six signers approved; `relayer` holds RELAYER_ROLE."""
    contract = deploy_task(
        federated_task,
        admin,
        [aggregator],
        list(devices[:3]) + [s.address for s in signers],
        minUpdates=2,
        maxUpdates=10,
    )
    contract.grantRole(RELAYER_ROLE, relayer, {"from": admin})
    return contract


# ---------------------------------------------------------------- submitUpdateBatch


def test_batch_records_counts_and_folds(batch_task, relayer, signers):
    batch = make_batch(batch_task, signers[:4], 1)
    file_digest = digest("batch-file")
    before = round_state(batch_task)
    tx = submit_batch(batch_task, relayer, batch, file_digest)

    event = tx.events["UpdateBatchSubmitted"]
    assert len(tx.events) == 1
    assert event["round"] == 1 and event["relayer"] == relayer
    assert bytes(event["batchDigest"]) == file_digest
    assert bytes(event["entriesRoot"]) == batch.root()
    assert event["entries"] == 4 and event["totalSamples"] == batch.total_samples == 50 + 51 + 52 + 53
    state = round_state(batch_task)
    assert state["phase"] == Phase.Open
    assert state["updates"] == before["updates"] + 4
    assert state["totalSamples"] == batch.total_samples
    expected = client_inputs.fold_batch_inputs_hash(
        before["inputsHash"], relayer.address, batch.root(), file_digest, 4, batch.total_samples
    )
    assert state["inputsHash"] == expected
    # spelled out: abi.encodePacked(bytes20, address, bytes32, bytes32, uint32, uint64) is 116 bytes
    packed = (
        before["inputsHash"]
        + bytes.fromhex(relayer.address[2:])
        + batch.root()
        + file_digest
        + (4).to_bytes(4, "big")
        + batch.total_samples.to_bytes(8, "big")
    )
    assert len(packed) == 116 and state["inputsHash"] == keccak(packed)[:20]


def test_inputs_hash_mixes_direct_and_batched_submissions(batch_task, relayer, devices, signers):
    """The Python fold over chain order (direct, batch, direct, batch) gives the chain's inputs hash."""
    items = []
    batch_task.submitUpdate(1, digest("d0"), 11, {"from": devices[0]})
    items.append((devices[0].address, digest("d0"), 11))
    first = make_batch(batch_task, signers[:2], 1, label="x")
    submit_batch(batch_task, relayer, first, digest("f1"))
    items.append(client_inputs.BatchSubmission(relayer.address, first.root(), digest("f1"), 2, first.total_samples))
    batch_task.submitUpdate(1, digest("d1"), 12, {"from": devices[1]})
    items.append((devices[1].address, digest("d1"), 12))
    second = make_batch(batch_task, signers[2:5], 1, label="y")
    submit_batch(batch_task, relayer, second, digest("f2"))
    items.append(client_inputs.BatchSubmission(relayer.address, second.root(), digest("f2"), 3, second.total_samples))

    state = round_state(batch_task)
    assert state["updates"] == 1 + 2 + 1 + 3
    assert state["totalSamples"] == 11 + 12 + first.total_samples + second.total_samples
    assert state["inputsHash"] == client_inputs.inputs_hash(batch_task.address, 1, items)


def test_batch_reaching_max_updates_closes_the_round(batch_task, relayer, devices, signers, aggregator):
    submit_round(batch_task, devices[:3], 1)  # 3 of 10
    batch = make_batch(batch_task, signers, 1)  # 6 more: 9, still open
    assert "RoundReadyForAggregation" not in submit_batch(batch_task, relayer, batch).events
    assert round_state(batch_task)["phase"] == Phase.Open
    # a batch may overshoot maxUpdates; it closes the round with the claimed count
    again = make_batch(batch_task, signers[:2], 1, label="late")
    tx = submit_batch(batch_task, relayer, again)
    ready = tx.events["RoundReadyForAggregation"]
    state = round_state(batch_task)
    assert state["phase"] == Phase.Aggregating
    assert ready["updates"] == state["updates"] == 11
    assert ready["totalSamples"] == state["totalSamples"]
    assert bytes(ready["inputsHash"]) == state["inputsHash"]
    # closed: no more submissions of either kind
    with reverts_with("WrongPhase", Phase.Open, Phase.Aggregating):
        submit_batch(batch_task, relayer, again)
    with reverts_with("WrongPhase", Phase.Open, Phase.Aggregating):
        batch_task.submitUpdate(1, digest("z"), 1, {"from": devices[0]})
    # the aggregator's result binds the batch-folded inputs hash; the next round opens
    tx = commit_reveal(batch_task, aggregator, 1, accepted=9)
    assert "AggregateCommitted" in tx.events and round_state(batch_task)["round"] == 2


def test_batch_sample_total_carries_past_32_bits(batch_task, relayer, signers, devices):
    """The round's total is kept as 32 low bits in the accumulator plus a carry in the round state."""
    batch_task.submitUpdate(1, digest("big"), MAX_SAMPLES, {"from": devices[0]})
    batch = make_batch(batch_task, signers[:3], 1, samples=[MAX_SAMPLES] * 3)
    submit_batch(batch_task, relayer, batch)
    batch_task.submitUpdate(1, digest("big2"), MAX_SAMPLES, {"from": devices[1]})
    assert round_state(batch_task)["totalSamples"] == 5 * MAX_SAMPLES
    chain.sleep(700)
    tx = batch_task.closeRound(1, {"from": devices[0]})
    assert tx.events["RoundReadyForAggregation"]["totalSamples"] == 5 * MAX_SAMPLES
    assert round_state(batch_task)["totalSamples"] == 5 * MAX_SAMPLES


def test_batch_needs_the_relayer_role(batch_task, signers, aggregator, admin):
    batch = make_batch(batch_task, signers[:2], 1)
    with reverts_with("AccessControlUnauthorizedAccount", aggregator.address, RELAYER_ROLE):
        submit_batch(batch_task, aggregator, batch)
    # the admin grants and revokes it
    batch_task.grantRole(RELAYER_ROLE, aggregator, {"from": admin})
    submit_batch(batch_task, aggregator, batch)
    batch_task.revokeRole(RELAYER_ROLE, aggregator, {"from": admin})
    with reverts_with("AccessControlUnauthorizedAccount", aggregator.address, RELAYER_ROLE):
        submit_batch(batch_task, aggregator, batch)


def test_batch_round_and_phase_errors(federated_task, admin, aggregator, relayer, signers):
    contract = deploy_task(federated_task, admin, [aggregator], [], start=False)
    contract.grantRole(RELAYER_ROLE, relayer, {"from": admin})
    root, file_digest = digest("root"), digest("file")
    with reverts_with("WrongPhase", Phase.Open, Phase.Registering):
        contract.submitUpdateBatch(0, file_digest, root, 1, 1, {"from": relayer})
    with reverts_with("WrongPhase", Phase.Open, Phase.Registering):
        contract.submitUpdateBatch(1, file_digest, root, 1, 1, {"from": relayer})
    contract.start({"from": admin})
    for wrong in (0, 2, 2**32 - 1):
        with reverts_with("WrongRound", 1, wrong):
            contract.submitUpdateBatch(wrong, file_digest, root, 1, 1, {"from": relayer})
    contract.cancel({"from": admin})
    with reverts_with("WrongPhase", Phase.Open, Phase.Cancelled):
        contract.submitUpdateBatch(1, file_digest, root, 1, 1, {"from": relayer})


def test_batch_argument_errors(batch_task, relayer):
    root, file_digest = digest("root"), digest("file")
    with reverts_with("EmptyDigest"):
        batch_task.submitUpdateBatch(1, ZERO_BYTES32, root, 1, 1, {"from": relayer})
    with reverts_with("EmptyDigest"):
        batch_task.submitUpdateBatch(1, file_digest, ZERO_BYTES32, 1, 1, {"from": relayer})
    with reverts_with("EmptyBatch"):
        batch_task.submitUpdateBatch(1, file_digest, root, 0, 0, {"from": relayer})
    with reverts_with("BatchSamplesOutOfRange", 2, 3, 3 * MAX_SAMPLES):
        batch_task.submitUpdateBatch(1, file_digest, root, 3, 2, {"from": relayer})
    with reverts_with("BatchSamplesOutOfRange", 3 * MAX_SAMPLES + 1, 3, 3 * MAX_SAMPLES):
        batch_task.submitUpdateBatch(1, file_digest, root, 3, 3 * MAX_SAMPLES + 1, {"from": relayer})
    # the bounds themselves are accepted
    batch_task.submitUpdateBatch(1, file_digest, root, 3, 3, {"from": relayer})
    batch_task.submitUpdateBatch(1, file_digest, root, 3, 3 * MAX_SAMPLES, {"from": relayer})
    assert round_state(batch_task)["totalSamples"] == 3 + 3 * MAX_SAMPLES


def test_batches_are_refused_under_secure_aggregation(federated_task, admin, aggregator, relayer):
    contract = deploy_task(federated_task, admin, [aggregator], [], secureAggregation=True)
    contract.grantRole(RELAYER_ROLE, relayer, {"from": admin})
    with reverts_with("BatchesNeedPlainUpdates"):
        contract.submitUpdateBatch(1, digest("file"), digest("root"), 1, 1, {"from": relayer})


# ---------------------------------------------------------------- EIP-712 signatures


def test_domain_and_type_hash_match_the_binding(batch_task):
    # The contract's type hash is private (EIP-170's size limit); updateHash below uses it.
    assert keccak(text="Update(uint32 round,bytes32 updateDigest,uint64 numSamples)") == signing.UPDATE_TYPEHASH
    assert bytes(batch_task.domainSeparator()) == signing.domain_separator(chain.id, batch_task.address)
    fields, name, version, chain_id, contract, salt, extensions = batch_task.eip712Domain()
    assert (bytes(fields), name, version, chain_id, contract) == (b"\x0f", "fedchain", "1", chain.id, batch_task)
    assert bytes(salt) == ZERO_BYTES32 and list(extensions) == []
    for r, n in ((1, 1), (7, 123), (2**32 - 1, 2**64 - 1)):
        assert bytes(batch_task.updateHash(r, digest("u"), n)) == signing.update_hash(
            chain.id, batch_task.address, r, digest("u"), n
        )


def test_update_signer_recovers_the_device(batch_task, signers):
    entry = signed(batch_task, signers[0], 1, "u", 42)
    assert batch_task.updateSigner(1, entry.update_digest, 42, entry.signature) == signers[0].address
    assert (
        signing.recover_update_signer(chain.id, batch_task.address, 1, entry.update_digest, 42, entry.signature)
        == signers[0].address
    )


def test_signatures_do_not_replay(batch_task, federated_task, admin, aggregator, signers):
    """A signature binds the task, round, chain, digest and sample count: elsewhere it recovers to someone else."""
    device = signers[0]
    d = digest("u")
    other_task = deploy_task(federated_task, admin, [aggregator], [device.address])
    for_other_task = signing.sign_update(device, chain.id, other_task.address, 1, d, 42)
    for_round_two = signing.sign_update(device, chain.id, batch_task.address, 2, d, 42)
    for_other_chain = signing.sign_update(device, chain.id + 1, batch_task.address, 1, d, 42)
    for_other_contract = signing.sign_update(device, chain.id, ZERO_ADDRESS[:-1] + "1", 1, d, 42)
    for sig in (for_other_task, for_round_two, for_other_chain, for_other_contract):
        assert batch_task.updateSigner(1, d, 42, sig) != device.address
    # each one is valid where it was meant
    assert other_task.updateSigner(1, d, 42, for_other_task) == device.address
    assert batch_task.updateSigner(2, d, 42, for_round_two) == device.address
    # tampered fields
    good = signing.sign_update(device, chain.id, batch_task.address, 1, d, 42)
    assert batch_task.updateSigner(1, d, 43, good) != device.address
    assert batch_task.updateSigner(1, digest("other"), 42, good) != device.address


def test_update_signer_is_zero_for_malformed_signatures(batch_task, signers):
    entry = signed(batch_task, signers[0], 1, "u", 42)
    sig = entry.signature
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s = int.from_bytes(sig[32:64], "big")
    high_s = sig[:32] + (n - s).to_bytes(32, "big") + bytes([55 - sig[64]])  # the malleable twin
    for bad in (b"", sig[:64], sig + b"\x00", sig[:64] + b"\x05", high_s, b"\x00" * 65):
        assert batch_task.updateSigner(1, entry.update_digest, 42, bad) == ZERO_ADDRESS
        assert signing.recover_update_signer(chain.id, batch_task.address, 1, entry.update_digest, 42, bad) is None


# ---------------------------------------------------------------- verifyBatchEntry


def _verify(task, batch, index, entry=None, proof=None, root=None, round_index=None):
    entry = entry or batch.entries[index]
    return task.verifyBatchEntry(
        batch.round if round_index is None else round_index,
        batch.root() if root is None else root,
        entry.device,
        entry.update_digest,
        entry.num_samples,
        entry.signature,
        batch.proof(index) if proof is None else proof,
    )


def test_batch_leaf_matches_the_binding(batch_task, signers):
    entry = signed(batch_task, signers[0], 1, "u", 42)
    leaf = batch_task.batchLeaf(entry.device, entry.update_digest, entry.num_samples, entry.signature)
    assert bytes(leaf) == entry.leaf() == merkle.batch_leaf(entry.device, entry.update_digest, 42, entry.signature)


@pytest.mark.parametrize("size", [1, 2, 5, 6])
def test_every_entry_verifies(batch_task, signers, size):
    batch = make_batch(batch_task, signers[:size], 1)
    for i in range(size):
        assert _verify(batch_task, batch, i)


def test_tampered_entries_and_wrong_proofs_do_not_verify(batch_task, signers, admin):
    batch = make_batch(batch_task, signers[:5], 1)
    entry = batch.entries[2]
    replace = client_batch.SignedUpdate
    tampered = [
        replace(entry.device, digest("swapped"), entry.num_samples, entry.signature),
        replace(entry.device, entry.update_digest, entry.num_samples + 1, entry.signature),
        replace(entry.device, entry.update_digest, entry.num_samples, batch.entries[3].signature),
        replace(batch.entries[3].device, entry.update_digest, entry.num_samples, entry.signature),
    ]
    for t in tampered:
        assert not _verify(batch_task, batch, 2, entry=t)
    assert not _verify(batch_task, batch, 2, proof=batch.proof(1))
    assert not _verify(batch_task, batch, 2, proof=[])
    assert not _verify(batch_task, batch, 2, root=digest("another root"))
    assert not _verify(batch_task, batch, 2, round_index=2)  # signed for round 1
    # a removed device's entry no longer verifies
    assert _verify(batch_task, batch, 2)
    batch_task.removeDevice(entry.device, {"from": admin})
    assert not _verify(batch_task, batch, 2)


def test_unapproved_signer_does_not_verify(batch_task, signers):
    """A correctly signed, included entry of a device that is not approved is refused."""
    stranger = signer_accounts(1, label="stranger")[0]
    batch = make_batch(batch_task, [*signers[:3], stranger], 1)
    index = next(i for i, e in enumerate(batch.entries) if e.device == stranger.address)
    assert (
        batch_task.updateSigner(
            1, batch.entries[index].update_digest, batch.entries[index].num_samples, batch.entries[index].signature
        )
        == stranger.address
    )
    assert not _verify(batch_task, batch, index)
    assert all(_verify(batch_task, batch, i) for i in range(len(batch.entries)) if i != index)


# ---------------------------------------------------------------- submitResult (k = n = 1)


def _submit_result(task, aggregator, result):
    return task.submitResult(
        result.round,
        result.inputs_hash,
        result.model,
        result.report,
        result.accepted,
        result.epsilon,
        {"from": aggregator},
    )


def test_submit_result_finalises_and_opens_the_next_round(aggregating, aggregator):
    result = make_result(aggregating, 1)
    tx = _submit_result(aggregating, aggregator, result)
    event = tx.events["AggregateCommitted"]
    assert event["round"] == 1 and event["aggregator"] == aggregator
    assert bytes(event["modelDigest"]) == result.model and bytes(event["reportDigest"]) == result.report
    assert bytes(event["inputsHash"]) == result.inputs_hash and event["acceptedUpdates"] == 3
    assert "ResultCommitted" not in tx.events and "ResultRevealed" not in tx.events
    assert tx.events["RoundOpened"]["round"] == 2
    assert bytes(aggregating.finalResultKey(1)) == result.key()
    assert bytes(aggregating.roundModelDigest(1)) == result.model == bytes(aggregating.globalModelDigest())
    state = round_state(aggregating)
    assert (state["round"], state["phase"], state["updates"]) == (2, Phase.Open, 0)


def test_submit_result_finishes_the_last_round(started, devices, aggregator):
    for r in range(1, NUM_ROUNDS + 1):
        submit_round(started, devices[:3], r)
        tx = _submit_result(started, aggregator, make_result(started, r))
    assert "TaskFinished" in tx.events
    assert round_state(started)["phase"] == Phase.Finished


def test_submit_result_checks_like_a_reveal(aggregating, aggregator, outsider):
    result = make_result(aggregating, 1)
    with reverts_with("InputsMismatch", result.inputs_hash, digest("wrong")[:20]):
        _submit_result(aggregating, aggregator, result.but(inputs_hash=digest("wrong")[:20]))
    with reverts_with("TooManyAccepted", 4, 3):
        _submit_result(aggregating, aggregator, result.but(accepted=4))
    with reverts_with("EmptyDigest"):
        _submit_result(aggregating, aggregator, result.but(model=ZERO_BYTES32))
    with reverts_with("EmptyDigest"):
        _submit_result(aggregating, aggregator, result.but(report=ZERO_BYTES32))
    with reverts_with("WrongRound", 1, 2):
        _submit_result(aggregating, aggregator, result.but(round=2))
    with reverts_with("AccessControlUnauthorizedAccount", outsider.address, AGGREGATOR_ROLE):
        _submit_result(aggregating, outsider, result)
    # fewer accepted than submitted is a valid result
    assert "AggregateCommitted" in _submit_result(aggregating, aggregator, result.but(accepted=2)).events


def test_submit_result_only_in_the_commit_window(started, devices, aggregator):
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Open):
        _submit_result(started, aggregator, make_result(started, 1))
    submit_round(started, devices[:3], 1)
    result = make_result(started, 1)
    # after a commitment (n = 1 opens the reveal window at once) the aggregator reveals instead
    started.commitResult(1, result.commitment(started, aggregator), {"from": aggregator})
    with reverts_with("WrongPhase", Phase.Aggregating, Phase.Revealing):
        _submit_result(started, aggregator, result)


def test_submit_result_refused_unless_single_aggregator_and_threshold_one(federated_task, admin, aggregators, devices):
    # n = 2, k = 2
    two = deploy_task(federated_task, admin, aggregators[:2], devices[:3], aggregatorThreshold=2)
    submit_round(two, devices[:3], 1)
    with reverts_with("NotSingleAggregator", 2, 2):
        _submit_result(two, aggregators[0], make_result(two, 1))
    # n is the round's: revoking the second aggregator leaves round 1's n = 2 (and k = 2 stays)
    two.revokeRole(AGGREGATOR_ROLE, aggregators[1], {"from": admin})
    assert two.aggregatorCount() == 1
    with reverts_with("NotSingleAggregator", 2, 2):
        _submit_result(two, aggregators[0], make_result(two, 1))


def test_submit_result_with_a_dp_ledger(federated_task, admin, aggregator, devices):
    contract = deploy_task(
        federated_task,
        admin,
        [aggregator],
        devices[:3],
        secureAggregation=False,
        epsilonBudgetMicro=10_000_000,
        firstRoundEpsilonMicro=1_000_000,
    )
    submit_round(contract, devices[:3], 1)
    with reverts_with("EpsilonTooLow", 999_999, 1_000_000):
        _submit_result(contract, aggregator, make_result(contract, 1, epsilon=999_999))
    tx = _submit_result(contract, aggregator, make_result(contract, 1, epsilon=1_000_000))
    assert tx.events["EpsilonSpent"]["spentMicro"] == 1_000_000
    assert contract.roundEpsilonMicro(1) == 1_000_000
