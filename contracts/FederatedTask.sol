// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title FederatedTask
/// @notice One federated-learning training task: its participants, its rounds, and the digest of every update
///         and every aggregate. Weights never touch the chain: devices and aggregators exchange them over IPFS and
///         the chain records the 32-byte sha256 digest of each CIDv0.
/// @dev Round lifecycle: Registering --start--> Open --(maxUpdates reached, or deadline passed with at least
///      minUpdates)--> Aggregating (commit window) --(every aggregator committed, or the window passed with at least
///      aggregatorThreshold commitments)--> Revealing --(aggregatorThreshold reveals agree)--> Open (next round) ...
///      --> Finished. A deadline that passes with fewer than minUpdates extends the round. A commit window that
///      passes with fewer than aggregatorThreshold commitments, or a reveal window that passes without
///      aggregatorThreshold agreeing reveals, fails the round: the next round opens with the unchanged global model
///      (see `failedRounds`). The admin may `cancel` a task whose aggregators keep failing.
///
///      Aggregators agree by commit-reveal: each holder of AGGREGATOR_ROLE commits
///      `resultCommitment(round, itself, inputsHash, modelDigest, reportDigest, acceptedUpdates, salt)` and later
///      reveals the preimage. Reveals agree when their result key `keccak256(abi.encode(inputsHash, modelDigest,
///      acceptedUpdates))` is equal (the report is not part of the agreement: it may carry per-aggregator data).
///      The first key to collect aggregatorThreshold reveals is final; every reveal of that round with another key,
///      before or after finalisation, records a fault against its aggregator. An aggregator that never reveals
///      records no fault (its commitment is overwritten by its next commit).
///
///      Storage is packed so that `submitUpdate` writes two slots that are already non-zero: the device record and
///      the round's submission accumulator. No function of the aggregation phase loops over devices; the only loop
///      (fault checks at finalisation) is over the round's earlier revealers, at most MAX_AGGREGATORS.
contract FederatedTask is AccessControl {
    /// @notice Largest sample count one update may claim. Capping it keeps a round's uint64 total from overflowing,
    ///         which would otherwise let one device make every later submission of the round revert.
    uint64 public constant MAX_SAMPLES_PER_UPDATE = type(uint32).max;

    /// @notice Role allowed to commit and reveal aggregation results.
    bytes32 public constant AGGREGATOR_ROLE = keccak256("AGGREGATOR_ROLE");

    /// @notice Most holders of AGGREGATOR_ROLE at any time, hence most commitments and reveals of one round.
    ///         Bounds the fault-check loop of the finalising reveal.
    uint32 public constant MAX_AGGREGATORS = 32;

    /// @notice Phases of the task. Aggregating is the commit window, Revealing the reveal window.
    enum Phase {
        Registering,
        Open,
        Aggregating,
        Finished,
        Cancelled,
        Revealing
    }

    /// @notice Constructor input: the task's fixed configuration.
    struct TaskConfig {
        bytes32 modelSpecDigest; // digest of the CIDv0 of the model/training description (JSON on IPFS)
        bytes32 initialModelDigest; // digest of the CIDv0 of the initial global weights (safetensors)
        uint32 numRounds; // rounds that must produce an aggregate (failed rounds do not count)
        uint32 minUpdates; // updates needed to aggregate once the deadline has passed
        uint32 maxUpdates; // updates that close the round at once
        uint32 roundDuration; // seconds
        uint16 strategyId; // aggregation strategy every aggregator must apply (0 = FedAvg)
        uint16 aggregatorThreshold; // k: agreeing reveals that make a result final
        uint32 aggregationDuration; // seconds of the commit window, and again of the reveal window
    }

    /// @dev One slot: what `submitUpdate` and the aggregation functions read about the current round. In
    ///      Aggregating and Revealing, `deadline` is the deadline of the commit or reveal window.
    struct RoundState {
        uint32 round;
        Phase phase;
        uint64 deadline;
        uint32 commits;
        uint32 reveals;
    }

    /// @dev One slot: a running hash over the round's submissions binds the aggregator's inputs.
    struct Submissions {
        bytes20 inputsHash;
        uint32 count;
        uint64 totalSamples;
    }

    /// @dev One slot per device. `lastRound` is the last round the device submitted to (0 = none).
    struct DeviceRecord {
        bool approved;
        uint32 lastRound;
        uint32 approvedInRound;
    }

    /// @dev Two slots per aggregator. Only the latest commitment is kept: committing for a later round overwrites
    ///      it, after which a reveal for the older round fails with NoCommitment.
    struct AggregatorRecord {
        uint32 committedRound;
        bool revealed;
        uint32 faults;
        bytes32 commitment;
    }

    /// @dev A reveal of the current round, kept until finalisation checks it against the final result. Revealers
    ///      of the current round all used the round's inputs hash, so model and accepted count make their key.
    struct RevealEntry {
        address aggregator;
        uint32 acceptedUpdates;
        bytes32 modelDigest;
    }

    /// @dev A revealed result (memory only).
    struct Result {
        bytes20 inputsHash;
        bytes32 modelDigest;
        bytes32 reportDigest;
        uint32 acceptedUpdates;
    }

    bytes32 public immutable modelSpecDigest;
    bytes32 public immutable initialModelDigest;
    uint32 public immutable numRounds;
    uint32 public immutable minUpdates;
    uint32 public immutable maxUpdates;
    uint32 public immutable roundDuration;
    uint16 public immutable strategyId;
    /// @notice k: number of agreeing reveals that make a round's result final.
    uint16 public immutable aggregatorThreshold;
    /// @notice Seconds of the commit window, and again of the reveal window.
    uint32 public immutable aggregationDuration;

    RoundState private _round;
    Submissions private _subs;
    mapping(address device => DeviceRecord) private _devices;

    /// @notice Digest of the current global model (the initial one until the first aggregate).
    bytes32 public globalModelDigest;
    /// @notice Number of currently approved devices.
    uint32 public deviceCount;
    /// @notice Number of current holders of AGGREGATOR_ROLE (n).
    uint32 public aggregatorCount;
    /// @notice Rounds that ended without agreement; each one adds a round to the task.
    uint32 public failedRounds;
    /// @notice Digest of the aggregate produced by each round (zero for a failed round).
    mapping(uint32 round => bytes32 digest) public roundModelDigest;
    /// @notice The result key `keccak256(abi.encode(inputsHash, modelDigest, acceptedUpdates))` finalised for each
    ///         round (zero until finalised, and for a failed round).
    mapping(uint32 round => bytes32 key) public finalResultKey;

    mapping(address aggregator => AggregatorRecord) private _aggregators;
    mapping(uint32 round => mapping(bytes32 key => uint32 votes)) private _votes;
    // Reveals of the current round, indexed by the round's reveal count; slots are reused round after round.
    RevealEntry[MAX_AGGREGATORS] private _reveals;

    error InvalidConfig(string reason);
    error WrongPhase(Phase expected, Phase actual);
    error WrongRound(uint32 expected, uint32 given);
    error NotApprovedDevice(address account);
    error DeviceAlreadyApproved(address account);
    error AlreadySubmitted(address device, uint32 round);
    error ZeroSamples();
    error TooManySamples(uint64 given, uint64 max);
    error ZeroAddress();
    error EmptyDigest();
    error DeadlineNotReached(uint64 deadline, uint64 nowTimestamp);
    error InputsMismatch(bytes20 expected, bytes20 given);
    error TooManyAccepted(uint32 accepted, uint32 submitted);
    error TaskOver(Phase phase);
    error TooManyAggregators(uint32 max);
    error AlreadyCommitted(address aggregator, uint32 round);
    error NoCommitment(address aggregator, uint32 round);
    error AlreadyRevealed(address aggregator, uint32 round);
    error CommitmentMismatch(address aggregator, uint32 round);
    error RevealWindowClosed(uint32 round);

    /// @notice The task's configuration, emitted once at deployment.
    event TaskConfigured(
        address indexed admin,
        bytes32 modelSpecDigest,
        bytes32 initialModelDigest,
        uint32 numRounds,
        uint32 minUpdates,
        uint32 maxUpdates,
        uint32 roundDuration,
        uint16 strategyId,
        uint16 aggregatorThreshold,
        uint32 aggregationDuration
    );
    event DeviceJoinRequested(address indexed device);
    event DeviceApproved(address indexed device, uint32 indexed round);
    event DeviceRemoved(address indexed device, address indexed by);
    event RoundOpened(uint32 indexed round, bytes32 globalModelDigest, uint64 deadline);
    event UpdateSubmitted(uint32 indexed round, address indexed device, bytes32 updateDigest, uint64 numSamples);
    event RoundExtended(uint32 indexed round, uint64 newDeadline, uint32 updates);
    /// @notice The round closed for aggregation: the commit window is open until currentRound().deadline.
    event RoundReadyForAggregation(uint32 indexed round, uint32 updates, uint64 totalSamples, bytes20 inputsHash);
    /// @notice An aggregator committed to a result of the round.
    event ResultCommitted(uint32 indexed round, address indexed aggregator, bytes32 commitment);
    /// @notice The commit window closed with `commits` commitments: reveals are accepted until `deadline`.
    event RevealOpened(uint32 indexed round, uint64 deadline, uint32 commits);
    /// @notice An aggregator revealed its committed result (in the reveal window, or late for a finalised round).
    event ResultRevealed(
        uint32 indexed round,
        address indexed aggregator,
        bytes32 modelDigest,
        bytes32 reportDigest,
        uint32 acceptedUpdates
    );
    /// @notice The round's result is final: aggregatorThreshold reveals agreed; `aggregator` made the last of them.
    event AggregateCommitted(
        uint32 indexed round,
        address indexed aggregator,
        bytes32 modelDigest,
        bytes32 reportDigest,
        bytes20 inputsHash,
        uint32 acceptedUpdates
    );
    /// @notice An aggregator revealed a result that disagrees with the round's final one.
    event AggregatorFault(
        uint32 indexed round,
        address indexed aggregator,
        bytes32 revealedModelDigest,
        bytes32 finalModelDigest,
        uint32 faults
    );
    /// @notice The round ended without agreement; the next round starts from the unchanged global model.
    event AggregationFailed(uint32 indexed round, uint32 commits, uint32 reveals);
    event TaskFinished(bytes32 finalModelDigest, uint32 rounds);
    event TaskCancelled(address indexed by, uint32 round);

    /// @param config The task's fixed configuration.
    /// @param admin The coordinator who approves devices and aggregators and starts the task.
    constructor(TaskConfig memory config, address admin) {
        if (config.modelSpecDigest == bytes32(0) || config.initialModelDigest == bytes32(0)) {
            revert InvalidConfig("empty digest");
        }
        if (config.numRounds == 0) revert InvalidConfig("numRounds is 0");
        if (config.minUpdates == 0) revert InvalidConfig("minUpdates is 0");
        if (config.maxUpdates < config.minUpdates) revert InvalidConfig("maxUpdates < minUpdates");
        if (config.roundDuration == 0) revert InvalidConfig("roundDuration is 0");
        if (config.aggregatorThreshold == 0) revert InvalidConfig("aggregatorThreshold is 0");
        if (config.aggregatorThreshold > MAX_AGGREGATORS) revert InvalidConfig("aggregatorThreshold > MAX_AGGREGATORS");
        if (config.aggregationDuration == 0) revert InvalidConfig("aggregationDuration is 0");
        if (admin == address(0)) revert InvalidConfig("admin is zero");
        modelSpecDigest = config.modelSpecDigest;
        initialModelDigest = config.initialModelDigest;
        numRounds = config.numRounds;
        minUpdates = config.minUpdates;
        maxUpdates = config.maxUpdates;
        roundDuration = config.roundDuration;
        strategyId = config.strategyId;
        aggregatorThreshold = config.aggregatorThreshold;
        aggregationDuration = config.aggregationDuration;
        globalModelDigest = config.initialModelDigest;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        emit TaskConfigured(
            admin,
            config.modelSpecDigest,
            config.initialModelDigest,
            config.numRounds,
            config.minUpdates,
            config.maxUpdates,
            config.roundDuration,
            config.strategyId,
            config.aggregatorThreshold,
            config.aggregationDuration
        );
    }

    // ---------------------------------------------------------------- participants

    /// @notice Ask the admin to approve the caller as a device of this task.
    function requestJoin() external {
        if (_devices[msg.sender].approved) revert DeviceAlreadyApproved(msg.sender);
        _requireNotOver();
        emit DeviceJoinRequested(msg.sender);
    }

    /// @notice Approve devices; they may submit from the round that is open now.
    /// @param devices Accounts to approve; already approved ones are skipped.
    function approveDevices(address[] calldata devices) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _requireNotOver();
        uint32 round = _round.round;
        uint32 added;
        for (uint256 i; i < devices.length; ++i) {
            if (devices[i] == address(0)) revert ZeroAddress();
            DeviceRecord storage record = _devices[devices[i]];
            if (record.approved) continue;
            record.approved = true;
            record.approvedInRound = round;
            ++added;
            emit DeviceApproved(devices[i], round);
        }
        deviceCount += added;
    }

    /// @notice Remove a device (admin) or leave the task (the device itself). Its past updates stay recorded.
    /// @param device The device to remove.
    function removeDevice(address device) external {
        if (msg.sender != device) _checkRole(DEFAULT_ADMIN_ROLE);
        DeviceRecord storage record = _devices[device];
        if (!record.approved) revert NotApprovedDevice(device);
        record.approved = false;
        --deviceCount;
        emit DeviceRemoved(device, msg.sender);
    }

    /// @notice Start the task: open round 1 with the initial model.
    function start() external onlyRole(DEFAULT_ADMIN_ROLE) {
        Phase phase = _round.phase;
        if (phase != Phase.Registering) revert WrongPhase(Phase.Registering, phase);
        _openRound(1, initialModelDigest);
    }

    /// @notice Cancel the task; no further rounds open. Works in every phase but Finished and Cancelled, so the
    ///         admin can end a task whose aggregators keep failing to agree.
    function cancel() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _requireNotOver();
        _round.phase = Phase.Cancelled;
        emit TaskCancelled(msg.sender, _round.round);
    }

    // ---------------------------------------------------------------- rounds

    /// @notice Record the caller's update for the open round.
    /// @param round The round the update was trained for (guards against a delayed transaction landing later).
    /// @param updateDigest sha256 digest of the update's CIDv0 on IPFS.
    /// @param numSamples Number of samples the update was trained on (its FedAvg weight).
    function submitUpdate(uint32 round, bytes32 updateDigest, uint64 numSamples) external {
        RoundState memory state = _round;
        if (state.phase != Phase.Open) revert WrongPhase(Phase.Open, state.phase);
        if (round != state.round) revert WrongRound(state.round, round);
        if (updateDigest == bytes32(0)) revert EmptyDigest();
        if (numSamples == 0) revert ZeroSamples();
        if (numSamples > MAX_SAMPLES_PER_UPDATE) revert TooManySamples(numSamples, MAX_SAMPLES_PER_UPDATE);
        DeviceRecord storage record = _devices[msg.sender];
        if (!record.approved) revert NotApprovedDevice(msg.sender);
        if (record.lastRound == round) revert AlreadySubmitted(msg.sender, round);

        record.lastRound = round;
        Submissions memory subs = _subs;
        subs.inputsHash = bytes20(keccak256(abi.encodePacked(subs.inputsHash, msg.sender, updateDigest, numSamples)));
        subs.count += 1;
        subs.totalSamples += numSamples;
        _subs = subs;
        emit UpdateSubmitted(round, msg.sender, updateDigest, numSamples);

        if (subs.count >= maxUpdates) _closeForAggregation(round, subs);
    }

    /// @notice Close the open round once its deadline has passed: it goes to aggregation if it has at least
    ///         minUpdates updates, otherwise its deadline is extended by roundDuration. Anyone may call it.
    /// @param round The open round.
    function closeRound(uint32 round) external {
        RoundState memory state = _round;
        if (state.phase != Phase.Open) revert WrongPhase(Phase.Open, state.phase);
        if (round != state.round) revert WrongRound(state.round, round);
        if (block.timestamp < state.deadline) revert DeadlineNotReached(state.deadline, uint64(block.timestamp));
        Submissions memory subs = _subs;
        if (subs.count >= minUpdates) {
            _closeForAggregation(round, subs);
        } else {
            uint64 deadline = uint64(block.timestamp) + roundDuration;
            _round.deadline = deadline;
            emit RoundExtended(round, deadline, subs.count);
        }
    }

    // ---------------------------------------------------------------- aggregation (commit-reveal)

    /// @notice Commit to a result of the round being aggregated, without disclosing it. A commitment is accepted
    ///         until the commit window is closed (a commitment after its deadline still counts if nobody has called
    ///         `closeAggregationWindow` yet). The reveal window opens as soon as every aggregator has committed.
    /// @param round The round being aggregated.
    /// @param commitment `resultCommitment(round, msg.sender, inputsHash, modelDigest, reportDigest,
    ///        acceptedUpdates, salt)` of the result the caller will reveal; `salt` must be secret and random.
    function commitResult(uint32 round, bytes32 commitment) external onlyRole(AGGREGATOR_ROLE) {
        RoundState memory state = _round;
        if (state.phase != Phase.Aggregating) revert WrongPhase(Phase.Aggregating, state.phase);
        if (round != state.round) revert WrongRound(state.round, round);
        if (commitment == bytes32(0)) revert EmptyDigest();
        AggregatorRecord storage record = _aggregators[msg.sender];
        if (record.committedRound == round) revert AlreadyCommitted(msg.sender, round);

        record.committedRound = round;
        record.revealed = false;
        record.commitment = commitment;
        uint32 commits = state.commits + 1;
        emit ResultCommitted(round, msg.sender, commitment);

        // aggregatorCount <= MAX_AGGREGATORS, so a round never collects more than MAX_AGGREGATORS commitments (nor
        // reveals: one per commitment), whatever the role churn.
        if (commits >= aggregatorCount) {
            _openReveal(round, commits);
        } else {
            _round.commits = commits;
        }
    }

    /// @notice Reveal the result committed to. In the round's reveal window, the reveal votes for its result key;
    ///         the key that reaches aggregatorThreshold votes becomes the round's result (AggregateCommitted) and
    ///         the next round opens, or the task finishes. Once a round is final its reveals are still accepted, so
    ///         a dissenting aggregator cannot avoid its fault by revealing late.
    /// @param round The round the commitment was made for (the caller's latest commitment).
    /// @param inputsHash The running hash of the round's submissions the aggregator used; in the reveal window it
    ///        must equal the chain's.
    /// @param modelDigest Digest of the new global model's CIDv0.
    /// @param reportDigest Digest of the CIDv0 of the aggregation report (accepted/rejected updates and why); not
    ///        part of the agreement.
    /// @param acceptedUpdates How many of the round's updates went into the aggregate.
    /// @param salt The secret salt of the commitment.
    /// @dev Reverts: EmptyDigest, NoCommitment (none for this round, e.g. replaced by a commitment for a later
    ///      round), AlreadyRevealed, CommitmentMismatch; in the reveal window RevealWindowClosed (deadline passed),
    ///      InputsMismatch, TooManyAccepted; WrongPhase(Revealing, phase) for the current round outside its reveal
    ///      window; RevealWindowClosed for a past round that was not finalised (it failed).
    function revealResult(
        uint32 round,
        bytes20 inputsHash,
        bytes32 modelDigest,
        bytes32 reportDigest,
        uint32 acceptedUpdates,
        bytes32 salt
    ) external onlyRole(AGGREGATOR_ROLE) {
        if (modelDigest == bytes32(0) || reportDigest == bytes32(0)) revert EmptyDigest();
        _reveal(
            round,
            Result({
                inputsHash: inputsHash,
                modelDigest: modelDigest,
                reportDigest: reportDigest,
                acceptedUpdates: acceptedUpdates
            }),
            salt
        );
    }

    /// @notice Close the current round's commit or reveal window once its deadline has passed. A commit window with
    ///         at least aggregatorThreshold commitments opens the reveal window; one with fewer fails the round, and
    ///         so does a reveal window (it would have been finalised had aggregatorThreshold reveals agreed). A
    ///         failed round opens the next round with the unchanged global model. Anyone may call it.
    /// @param round The current round.
    function closeAggregationWindow(uint32 round) external {
        RoundState memory state = _round;
        if (round != state.round) revert WrongRound(state.round, round);
        if (state.phase != Phase.Aggregating && state.phase != Phase.Revealing) {
            revert WrongPhase(Phase.Aggregating, state.phase);
        }
        if (block.timestamp < state.deadline) revert DeadlineNotReached(state.deadline, uint64(block.timestamp));
        if (state.phase == Phase.Aggregating && state.commits >= aggregatorThreshold) {
            _openReveal(round, state.commits);
        } else {
            _failRound(state);
        }
    }

    // ---------------------------------------------------------------- views

    /// @notice Everything a client needs about the current round, in one call. In Aggregating and Revealing,
    ///         `deadline` is the deadline of the commit or reveal window.
    function currentRound()
        external
        view
        returns (
            uint32 round,
            Phase phase,
            uint64 deadline,
            uint32 updates,
            uint64 totalSamples,
            bytes20 inputsHash,
            bytes32 globalModel
        )
    {
        RoundState memory state = _round;
        Submissions memory subs = _subs;
        return (
            state.round,
            state.phase,
            state.deadline,
            subs.count,
            subs.totalSamples,
            subs.inputsHash,
            globalModelDigest
        );
    }

    /// @notice The current round's aggregation progress.
    /// @return commits Commitments made for the current round.
    /// @return reveals Reveals made in the current round's reveal window.
    /// @return threshold aggregatorThreshold (k).
    /// @return aggregators aggregatorCount (n).
    function aggregationState()
        external
        view
        returns (uint32 commits, uint32 reveals, uint16 threshold, uint32 aggregators)
    {
        RoundState memory state = _round;
        return (state.commits, state.reveals, aggregatorThreshold, aggregatorCount);
    }

    /// @notice An aggregator's record: its latest commitment and its fault count.
    /// @param aggregator The account to look up.
    /// @return committedRound The round of its latest commitment (0 = none).
    /// @return revealed Whether it revealed that commitment.
    /// @return faults How many of its reveals disagreed with a final result.
    /// @return commitment Its latest commitment.
    function aggregatorInfo(address aggregator)
        external
        view
        returns (uint32 committedRound, bool revealed, uint32 faults, bytes32 commitment)
    {
        AggregatorRecord memory record = _aggregators[aggregator];
        return (record.committedRound, record.revealed, record.faults, record.commitment);
    }

    /// @notice A device's registration record.
    /// @param device The account to look up.
    function deviceInfo(address device)
        external
        view
        returns (bool approved, uint32 lastRound, uint32 approvedInRound)
    {
        DeviceRecord memory record = _devices[device];
        return (record.approved, record.lastRound, record.approvedInRound);
    }

    /// @notice The running hash a round's submissions start from (round- and task-specific, never zero).
    /// @param round The round.
    function initialInputsHash(uint32 round) public view returns (bytes20) {
        return bytes20(keccak256(abi.encode(address(this), round)));
    }

    /// @notice The commitment `commitResult` expects: binds the task, the round and the aggregator, so a
    ///         commitment can be neither replayed elsewhere nor copied by another aggregator.
    /// @param round The round.
    /// @param aggregator The committing aggregator.
    /// @param inputsHash The inputs hash the result was computed from.
    /// @param modelDigest Digest of the aggregate's CIDv0.
    /// @param reportDigest Digest of the report's CIDv0.
    /// @param acceptedUpdates How many updates went into the aggregate.
    /// @param salt A secret random salt.
    function resultCommitment(
        uint32 round,
        address aggregator,
        bytes20 inputsHash,
        bytes32 modelDigest,
        bytes32 reportDigest,
        uint32 acceptedUpdates,
        bytes32 salt
    ) public view returns (bytes32) {
        return keccak256(
            abi.encode(address(this), round, aggregator, inputsHash, modelDigest, reportDigest, acceptedUpdates, salt)
        );
    }

    /// @notice The key reveals agree on: `keccak256(abi.encode(inputsHash, modelDigest, acceptedUpdates))`.
    /// @param inputsHash The inputs hash the result was computed from.
    /// @param modelDigest Digest of the aggregate's CIDv0.
    /// @param acceptedUpdates How many updates went into the aggregate.
    function resultKey(bytes20 inputsHash, bytes32 modelDigest, uint32 acceptedUpdates) public pure returns (bytes32) {
        return keccak256(abi.encode(inputsHash, modelDigest, acceptedUpdates));
    }

    // ---------------------------------------------------------------- internals

    /// @dev Keeps aggregatorCount equal to the number of AGGREGATOR_ROLE holders, at most MAX_AGGREGATORS.
    function _grantRole(bytes32 role, address account) internal override returns (bool granted) {
        if (role == AGGREGATOR_ROLE && aggregatorCount >= MAX_AGGREGATORS && !hasRole(role, account)) {
            revert TooManyAggregators(MAX_AGGREGATORS);
        }
        granted = super._grantRole(role, account);
        if (granted && role == AGGREGATOR_ROLE) ++aggregatorCount;
    }

    /// @dev Keeps aggregatorCount equal to the number of AGGREGATOR_ROLE holders.
    function _revokeRole(bytes32 role, address account) internal override returns (bool revoked) {
        revoked = super._revokeRole(role, account);
        if (revoked && role == AGGREGATOR_ROLE) --aggregatorCount;
    }

    function _reveal(uint32 round, Result memory result, bytes32 salt) private {
        AggregatorRecord storage record = _aggregators[msg.sender];
        if (record.committedRound != round || record.commitment == bytes32(0)) revert NoCommitment(msg.sender, round);
        if (record.revealed) revert AlreadyRevealed(msg.sender, round);
        bytes32 expected = resultCommitment(
            round,
            msg.sender,
            result.inputsHash,
            result.modelDigest,
            result.reportDigest,
            result.acceptedUpdates,
            salt
        );
        if (record.commitment != expected) revert CommitmentMismatch(msg.sender, round);

        bytes32 key = resultKey(result.inputsHash, result.modelDigest, result.acceptedUpdates);
        RoundState memory state = _round;
        if (round == state.round && state.phase == Phase.Revealing) {
            _revealInWindow(state, record, key, result);
            return;
        }
        bytes32 finalKey = finalResultKey[round];
        if (finalKey != bytes32(0)) {
            // late reveal of a finalised round: accepted so that a dissenting result still records its fault
            record.revealed = true;
            emit ResultRevealed(round, msg.sender, result.modelDigest, result.reportDigest, result.acceptedUpdates);
            if (key != finalKey) {
                _recordFault(round, msg.sender, record, result.modelDigest, roundModelDigest[round]);
            }
            return;
        }
        if (round == state.round) revert WrongPhase(Phase.Revealing, state.phase);
        revert RevealWindowClosed(round);
    }

    function _revealInWindow(
        RoundState memory state,
        AggregatorRecord storage record,
        bytes32 key,
        Result memory result
    ) private {
        uint32 round = state.round;
        if (block.timestamp >= state.deadline) revert RevealWindowClosed(round);
        Submissions memory subs = _subs;
        if (result.inputsHash != subs.inputsHash) revert InputsMismatch(subs.inputsHash, result.inputsHash);
        if (result.acceptedUpdates > subs.count) revert TooManyAccepted(result.acceptedUpdates, subs.count);

        record.revealed = true;
        uint32 votes = _votes[round][key] + 1;
        emit ResultRevealed(round, msg.sender, result.modelDigest, result.reportDigest, result.acceptedUpdates);
        if (votes >= aggregatorThreshold) {
            // The finalising reveal is not stored: the round's later reveals are late reveals, which compare with
            // finalResultKey and read neither the votes nor the reveal list.
            _finalise(state, key, result);
        } else {
            _votes[round][key] = votes;
            // reveals <= commits <= MAX_AGGREGATORS (see commitResult), so the index is in range
            _reveals[state.reveals] = RevealEntry({
                aggregator: msg.sender,
                acceptedUpdates: result.acceptedUpdates,
                modelDigest: result.modelDigest
            });
            _round.reveals = state.reveals + 1;
        }
    }

    function _finalise(RoundState memory state, bytes32 key, Result memory result) private {
        uint32 round = state.round;
        bytes32 modelDigest = result.modelDigest;
        finalResultKey[round] = key;
        roundModelDigest[round] = modelDigest;
        globalModelDigest = modelDigest;
        emit AggregateCommitted(
            round, msg.sender, modelDigest, result.reportDigest, result.inputsHash, result.acceptedUpdates
        );

        // Earlier revealers of this round (the caller would be entry state.reveals); all used the round's inputs
        // hash, so a different model or accepted count is a different key.
        for (uint256 i; i < state.reveals; ++i) {
            RevealEntry memory entry = _reveals[i];
            if (entry.modelDigest != modelDigest || entry.acceptedUpdates != result.acceptedUpdates) {
                _recordFault(round, entry.aggregator, _aggregators[entry.aggregator], entry.modelDigest, modelDigest);
            }
        }

        if (uint256(round) >= uint256(numRounds) + failedRounds) {
            state.phase = Phase.Finished;
            state.reveals += 1; // the finalising reveal
            _round = state;
            emit TaskFinished(modelDigest, round);
        } else {
            _openRound(round + 1, modelDigest);
        }
    }

    function _recordFault(
        uint32 round,
        address aggregator,
        AggregatorRecord storage record,
        bytes32 revealedModelDigest,
        bytes32 finalModelDigest
    ) private {
        uint32 faults = record.faults + 1;
        record.faults = faults;
        emit AggregatorFault(round, aggregator, revealedModelDigest, finalModelDigest, faults);
    }

    function _openReveal(uint32 round, uint32 commits) private {
        uint64 deadline = uint64(block.timestamp) + aggregationDuration;
        _round = RoundState({round: round, phase: Phase.Revealing, deadline: deadline, commits: commits, reveals: 0});
        emit RevealOpened(round, deadline, commits);
    }

    function _failRound(RoundState memory state) private {
        ++failedRounds;
        emit AggregationFailed(state.round, state.commits, state.reveals);
        _openRound(state.round + 1, globalModelDigest);
    }

    function _openRound(uint32 round, bytes32 modelDigest) private {
        uint64 deadline = uint64(block.timestamp) + roundDuration;
        _round = RoundState({round: round, phase: Phase.Open, deadline: deadline, commits: 0, reveals: 0});
        // Seeding the accumulator with a non-zero value keeps the first submitter's write cheap.
        _subs = Submissions({inputsHash: initialInputsHash(round), count: 0, totalSamples: 0});
        emit RoundOpened(round, modelDigest, deadline);
    }

    function _closeForAggregation(uint32 round, Submissions memory subs) private {
        // the commit window; commits and reveals are still zero from _openRound
        uint64 deadline = uint64(block.timestamp) + aggregationDuration;
        _round = RoundState({round: round, phase: Phase.Aggregating, deadline: deadline, commits: 0, reveals: 0});
        emit RoundReadyForAggregation(round, subs.count, subs.totalSamples, subs.inputsHash);
    }

    function _requireNotOver() private view {
        Phase phase = _round.phase;
        if (phase == Phase.Finished || phase == Phase.Cancelled) revert TaskOver(phase);
    }
}
