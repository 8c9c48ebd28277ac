// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title FederatedTask
/// @notice One federated-learning training task: its participants, its rounds, and the digest of every update
///         and every aggregate. Weights never touch the chain: devices and aggregators exchange them over IPFS and
///         the chain records the 32-byte sha256 digest of each CIDv0.
/// @dev Round lifecycle: Registering --start--> Open --(maxUpdates reached, or deadline passed with at least
///      minUpdates)--> Aggregating --commitAggregate--> Open (next round) ... --> Finished. A deadline that passes
///      with fewer than minUpdates extends the round. Storage is packed so that `submitUpdate` writes two slots
///      that are already non-zero: the device record and the round's submission accumulator.
contract FederatedTask is AccessControl {
    /// @notice Largest sample count one update may claim. Capping it keeps a round's uint64 total from overflowing,
    ///         which would otherwise let one device make every later submission of the round revert.
    uint64 public constant MAX_SAMPLES_PER_UPDATE = type(uint32).max;

    /// @notice Role allowed to commit aggregates.
    bytes32 public constant AGGREGATOR_ROLE = keccak256("AGGREGATOR_ROLE");

    /// @notice Phases of the task.
    enum Phase {
        Registering,
        Open,
        Aggregating,
        Finished,
        Cancelled
    }

    /// @notice Constructor input: the task's fixed configuration.
    struct TaskConfig {
        bytes32 modelSpecDigest; // digest of the CIDv0 of the model/training description (JSON on IPFS)
        bytes32 initialModelDigest; // digest of the CIDv0 of the initial global weights (safetensors)
        uint32 numRounds;
        uint32 minUpdates; // updates needed to aggregate once the deadline has passed
        uint32 maxUpdates; // updates that close the round at once
        uint32 roundDuration; // seconds
        uint16 strategyId; // aggregation strategy every aggregator must apply (0 = FedAvg)
    }

    /// @dev One slot: what `submitUpdate` and `commitAggregate` read about the current round.
    struct RoundState {
        uint32 round;
        Phase phase;
        uint64 deadline;
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

    bytes32 public immutable modelSpecDigest;
    bytes32 public immutable initialModelDigest;
    uint32 public immutable numRounds;
    uint32 public immutable minUpdates;
    uint32 public immutable maxUpdates;
    uint32 public immutable roundDuration;
    uint16 public immutable strategyId;

    RoundState private _round;
    Submissions private _subs;
    mapping(address device => DeviceRecord) private _devices;

    /// @notice Digest of the current global model (the initial one until the first aggregate).
    bytes32 public globalModelDigest;
    /// @notice Number of currently approved devices.
    uint32 public deviceCount;
    /// @notice Digest of the aggregate produced by each round.
    mapping(uint32 round => bytes32 digest) public roundModelDigest;

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

    /// @notice The task's configuration, emitted once at deployment.
    event TaskConfigured(
        address indexed admin,
        bytes32 modelSpecDigest,
        bytes32 initialModelDigest,
        uint32 numRounds,
        uint32 minUpdates,
        uint32 maxUpdates,
        uint32 roundDuration,
        uint16 strategyId
    );
    event DeviceJoinRequested(address indexed device);
    event DeviceApproved(address indexed device, uint32 indexed round);
    event DeviceRemoved(address indexed device, address indexed by);
    event RoundOpened(uint32 indexed round, bytes32 globalModelDigest, uint64 deadline);
    event UpdateSubmitted(uint32 indexed round, address indexed device, bytes32 updateDigest, uint64 numSamples);
    event RoundExtended(uint32 indexed round, uint64 newDeadline, uint32 updates);
    event RoundReadyForAggregation(uint32 indexed round, uint32 updates, uint64 totalSamples, bytes20 inputsHash);
    event AggregateCommitted(
        uint32 indexed round,
        address indexed aggregator,
        bytes32 modelDigest,
        bytes32 reportDigest,
        bytes20 inputsHash,
        uint32 acceptedUpdates
    );
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
        if (admin == address(0)) revert InvalidConfig("admin is zero");
        modelSpecDigest = config.modelSpecDigest;
        initialModelDigest = config.initialModelDigest;
        numRounds = config.numRounds;
        minUpdates = config.minUpdates;
        maxUpdates = config.maxUpdates;
        roundDuration = config.roundDuration;
        strategyId = config.strategyId;
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
            config.strategyId
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

    /// @notice Cancel the task; no further rounds open.
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

    /// @notice Commit the aggregate of a round and open the next one (or finish the task).
    /// @param round The round being aggregated.
    /// @param inputsHash The running hash of the round's submissions the aggregator used; must equal the chain's.
    /// @param modelDigest Digest of the new global model's CIDv0.
    /// @param reportDigest Digest of the CIDv0 of the aggregation report (accepted/rejected updates and why).
    /// @param acceptedUpdates How many of the round's updates went into the aggregate.
    function commitAggregate(
        uint32 round,
        bytes20 inputsHash,
        bytes32 modelDigest,
        bytes32 reportDigest,
        uint32 acceptedUpdates
    ) external onlyRole(AGGREGATOR_ROLE) {
        RoundState memory state = _round;
        if (state.phase != Phase.Aggregating) revert WrongPhase(Phase.Aggregating, state.phase);
        if (round != state.round) revert WrongRound(state.round, round);
        if (modelDigest == bytes32(0) || reportDigest == bytes32(0)) revert EmptyDigest();
        Submissions memory subs = _subs;
        if (inputsHash != subs.inputsHash) revert InputsMismatch(subs.inputsHash, inputsHash);
        if (acceptedUpdates > subs.count) revert TooManyAccepted(acceptedUpdates, subs.count);

        roundModelDigest[round] = modelDigest;
        globalModelDigest = modelDigest;
        emit AggregateCommitted(round, msg.sender, modelDigest, reportDigest, inputsHash, acceptedUpdates);

        if (round >= numRounds) {
            _round.phase = Phase.Finished;
            emit TaskFinished(modelDigest, round);
        } else {
            _openRound(round + 1, modelDigest);
        }
    }

    // ---------------------------------------------------------------- views

    /// @notice Everything a client needs about the current round, in one call.
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

    // ---------------------------------------------------------------- internals

    function _openRound(uint32 round, bytes32 modelDigest) private {
        uint64 deadline = uint64(block.timestamp) + roundDuration;
        _round = RoundState({round: round, phase: Phase.Open, deadline: deadline});
        // Seeding the accumulator with a non-zero value keeps the first submitter's write cheap.
        _subs = Submissions({inputsHash: initialInputsHash(round), count: 0, totalSamples: 0});
        emit RoundOpened(round, modelDigest, deadline);
    }

    function _closeForAggregation(uint32 round, Submissions memory subs) private {
        _round.phase = Phase.Aggregating;
        emit RoundReadyForAggregation(round, subs.count, subs.totalSamples, subs.inputsHash);
    }

    function _requireNotOver() private view {
        Phase phase = _round.phase;
        if (phase == Phase.Finished || phase == Phase.Cancelled) revert TaskOver(phase);
    }
}
