// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title BufferedTask
/// @notice One federated-learning task in the asynchronous buffered mode (FedBuff, Nguyen et al. 2022): devices
///         fetch the latest global model whenever they are ready and submit an update tagged with the model
///         version they trained from; the contract buffers it while its staleness is within the task's bound, and
///         every `bufferSize` (K) updates the aggregators combine the buffer with staleness weighting and publish the
///         next version. Nothing waits for the slowest device. As in FederatedTask, weights never touch the chain:
///         the chain records the 32-byte sha256 digest of each update's and each model's CIDv0 on IPFS.
/// @dev Versions: version 0 is the initial model (`initialModelDigest`); every agreed buffer publishes the next one
///      (`versionDigest(v)`), until `numVersions` versions were published (Finished) or the admin cancels.
///
///      Buffers are numbered 1, 2, ... in the order they fill. At any time there is one *filling* buffer (accepting
///      submissions) and at most one *pending* buffer (closed, under aggregation): devices keep submitting into
///      the filling buffer while the pending one is aggregated. When the filling buffer reaches K updates it is
///      full (BufferFull, with its inputs hash). If no buffer is pending it goes to aggregation at once and the
///      next buffer starts filling; otherwise it waits, full, until the pending buffer is published or
///      discarded, and a submission meanwhile is refused with BuffersFull (the device keeps its update off chain
///      and submits again later, if need be trained from a newer version). So at most two buffers (2K updates)
///      are ever ahead of the published model, and an aggregator works on one buffer at a time.
///
///      Submission checks, in this order: TaskNotRunning, EmptyDigest, ZeroSamples, TooManySamples (over
///      maxSamplesPerUpdate), NotApprovedDevice, UnknownVersion (baseVersion is not yet published), TooStale
///      (currentVersion - baseVersion > maxStaleness), BuffersFull, AlreadyBuffered (one update per device per
///      buffer). The staleness recorded with an accepted update is currentVersion - baseVersion at submission.
///
///      Staleness weighting is computed off chain, deterministically, by every aggregator from what the chain
///      records: each entry's numSamples and staleness s, and the task's `weightingId` and `weightingParamMicro`:
///      WEIGHTING_CONSTANT (0): w(s) = 1; WEIGHTING_POLYNOMIAL (1): w(s) = (1 + s)^(-a) with a =
///      weightingParamMicro / 1e6 (FedBuff's polynomial weighting; a = 0.5 gives 1/sqrt(1 + s)). The staleness
///      used is the one recorded at submission (an update submitted while an earlier buffer is being aggregated
///      lands one version further behind than recorded; all aggregators use the recorded value, so they agree).
///
///      Inputs hash of buffer b: starts at `initialInputsHash(b)` and folds every accepted entry in order:
///      bytes20(keccak256(abi.encodePacked(bytes20 previous, address device, bytes32 updateDigest,
///      uint32 numSamples, uint32 baseVersion, uint32 staleness))) (84 bytes). Aggregators reveal it, so an
///      agreed result binds the exact ordered entries and their weights.
///
///      Aggregation of a buffer, k-of-n commit-reveal as in FederatedTask: an attempt opens a commit window of
///      aggregationDuration seconds (AggregationOpened); each holder of AGGREGATOR_ROLE commits
///      `resultCommitment(buffer, attempt, itself, inputsHash, modelDigest, reportDigest, acceptedUpdates, salt)`;
///      the reveal window opens when all n committed, or when the commit window is closed with at least k
///      commitments; the first result key `keccak256(abi.encode(inputsHash, modelDigest, acceptedUpdates))` with k
///      reveals is final: the next version is published (VersionPublished). Faults as in FederatedTask: a reveal
///      whose key differs from the final one (before or after finalisation), a reveal withheld until the reveal
///      window closed, and a commitment to the attempt that published a buffer never revealed (recorded at the
///      aggregator's next commitment; a withheld reveal of a failed attempt is faulted once, when its window closes,
///      and can no longer be revealed); at maxAggregatorFaults faults an aggregator is suspended until the admin
///      revokes and grants its role again. n is fixed for an attempt when it opens; start() requires
///      n / 2 < k <= n and a grant while running may not make n >= 2k.
///
///      Deadlines (the task never hangs): an attempt whose commit window passes with fewer than k commitments, or
///      whose reveal window passes without k agreeing reveals, fails (AggregationFailed) when anyone calls
///      `closeAggregationWindow`. The buffer is then aggregated again in a fresh attempt, up to
///      maxAggregationAttempts attempts; after the last one it is discarded (BufferDiscarded): the version is
///      unchanged, its devices may submit again into later buffers, and a full waiting buffer goes to aggregation.
///      A filling buffer waits for K updates from whichever devices are awake (each device counts once per
///      buffer). So that sleeping devices cannot stall a task either, a task may set `bufferDuration`: once a
///      buffer has been filling that long with at least `minBufferSize` updates, anyone may close it early
///      (`closeBuffer`) if no other buffer is pending; it is then aggregated like a full one.
///
///      Storage and gas: a submission reads and writes the filling buffer's slot (its inputs hash, number, count
///      and the current version), the device's record and two entry slots, and reads the task status. Entry slots
///      form a ring of two buffers (buffer b uses ring b % 2), the filling and the pending buffer; the constructor
///      writes a non-zero placeholder into every ring slot, so that no device pays for a fresh storage slot (the
///      deployment pays it once). `bufferEntry` serves the buffers still in the ring (the filling one and the one
///      before it); older entries are in the UpdateBuffered events, bound by the published inputs hash.
contract BufferedTask is AccessControl {
    /// @notice Role allowed to commit and reveal aggregation results.
    bytes32 public constant AGGREGATOR_ROLE = keccak256("AGGREGATOR_ROLE");
    /// @notice Most holders of AGGREGATOR_ROLE at any time (bounds the fault loops).
    uint32 public constant MAX_AGGREGATORS = 32;
    /// @notice Largest K: the constructor pre-writes 2 * K entries of two slots each.
    uint32 public constant MAX_BUFFER_SIZE = 64;
    /// @notice Largest per-update sample count a task may allow (an entry stores it in 32 bits).
    uint32 public constant MAX_SAMPLES_PER_UPDATE = type(uint32).max;
    /// @notice Staleness weighting ids (see the contract's notes).
    uint16 public constant WEIGHTING_CONSTANT = 0;
    uint16 public constant WEIGHTING_POLYNOMIAL = 1;

    /// @notice Task status. Running covers filling and aggregating buffers.
    enum Status {
        Registering,
        Running,
        Finished,
        Cancelled
    }

    /// @notice Aggregation phase of the pending buffer: None (no buffer pending), Committing, Revealing.
    enum AggPhase {
        None,
        Committing,
        Revealing
    }

    /// @notice Life of a buffer.
    enum BufferStatus {
        Filling,
        Full, // full, waiting for the pending buffer to be published or discarded
        Aggregating,
        Published,
        Discarded
    }

    /// @notice Constructor input: the task's fixed configuration.
    struct Config {
        bytes32 modelSpecDigest; // digest of the CIDv0 of the model/training description
        bytes32 initialModelDigest; // version 0
        uint32 numVersions; // versions to publish before the task finishes
        uint32 bufferSize; // K: updates that close a buffer, 1..MAX_BUFFER_SIZE
        uint32 maxStaleness; // largest accepted currentVersion - baseVersion
        uint32 maxSamplesPerUpdate; // 1..MAX_SAMPLES_PER_UPDATE
        uint16 strategyId; // aggregation strategy every aggregator applies (0 = FedAvg)
        uint16 weightingId; // staleness weighting (WEIGHTING_*)
        uint32 weightingParamMicro; // its parameter in millionths (polynomial: the exponent a)
        uint16 aggregatorThreshold; // k
        uint32 aggregationDuration; // seconds of the commit window, and again of the reveal window
        uint16 maxAggregationAttempts; // attempts per buffer before it is discarded (>= 1)
        uint16 maxAggregatorFaults; // faults that suspend an aggregator (>= 1)
        uint32 bufferDuration; // seconds after which a buffer may be closed early (0 = never)
        uint32 minBufferSize; // updates an early-closed buffer needs: 1..bufferSize when bufferDuration > 0
    }

    /// @dev One slot, what a submission reads and writes: the filling buffer and the current version.
    struct Filling {
        bytes20 inputsHash;
        uint32 buffer;
        uint32 count;
        uint32 version;
    }

    /// @dev One slot: task status and the pending buffer's aggregation.
    struct AggState {
        Status status;
        AggPhase phase;
        uint32 buffer; // pending buffer (0 = none)
        uint16 attempt; // 1-based
        uint64 deadline; // of the commit or reveal window
        uint32 commits;
        uint32 reveals;
        uint32 aggregators; // n of this attempt
    }

    /// @dev One slot per closed buffer.
    struct BufferRecord {
        bytes20 inputsHash;
        uint32 count;
        BufferStatus status;
        uint32 version; // Published: the version it produced; Aggregating: the version it builds on
        uint16 attempt; // Published: the attempt whose result was published
    }

    /// @dev Two slots per ring position: the entry's metadata and its update digest.
    struct Entry {
        address device;
        uint32 numSamples;
        uint32 baseVersion;
        uint32 staleness;
        bytes32 updateDigest;
    }

    /// @dev One slot per device.
    struct DeviceRecord {
        bool approved;
        uint32 lastBuffer; // last buffer it submitted to (0 = none)
        uint32 approvedAtVersion;
    }

    /// @dev A revealed result (memory only).
    struct Result {
        bytes20 inputsHash;
        bytes32 modelDigest;
        bytes32 reportDigest;
        uint32 acceptedUpdates;
    }

    /// @dev Two slots per aggregator: its latest commitment and its faults.
    struct AggregatorRecord {
        uint32 committedBuffer;
        uint16 committedAttempt;
        bool revealed;
        uint32 faults;
        bool suspended;
        bytes32 commitment;
    }

    /// @dev A reveal of the current attempt, kept until finalisation checks it against the final key.
    struct RevealEntry {
        address aggregator;
        uint32 acceptedUpdates;
        bytes32 modelDigest;
    }

    bytes32 public immutable modelSpecDigest;
    bytes32 public immutable initialModelDigest;
    uint32 public immutable numVersions;
    uint32 public immutable bufferSize;
    uint32 public immutable maxStaleness;
    uint32 public immutable maxSamplesPerUpdate;
    uint16 public immutable strategyId;
    uint16 public immutable weightingId;
    uint32 public immutable weightingParamMicro;
    uint16 public immutable aggregatorThreshold;
    uint32 public immutable aggregationDuration;
    uint16 public immutable maxAggregationAttempts;
    uint16 public immutable maxAggregatorFaults;
    uint32 public immutable bufferDuration;
    uint32 public immutable minBufferSize;

    Filling private _filling;
    AggState private _agg;
    mapping(address device => DeviceRecord) private _devices;
    mapping(uint256 ring => mapping(uint256 position => Entry)) private _entries;
    mapping(uint32 buffer => BufferRecord) private _buffers;

    /// @notice Digest of each published version's model (version 0: the initial model).
    mapping(uint32 version => bytes32 digest) public versionDigest;
    /// @notice The result key finalised for each published buffer (zero otherwise).
    mapping(uint32 buffer => bytes32 key) public finalResultKey;
    /// @notice Number of currently approved devices.
    uint32 public deviceCount;
    /// @notice n: current holders of AGGREGATOR_ROLE that are not suspended.
    uint32 public aggregatorCount;
    /// @notice Buffers discarded after maxAggregationAttempts failed attempts.
    uint32 public discardedBuffers;
    /// @notice When the filling buffer opened (its early close is possible from fillingOpenedAt + bufferDuration).
    uint64 public fillingOpenedAt;

    mapping(address aggregator => AggregatorRecord) private _aggregators;
    mapping(uint32 buffer => mapping(uint16 attempt => mapping(bytes32 key => uint32 votes))) private _votes;
    RevealEntry[MAX_AGGREGATORS] private _reveals;
    address[MAX_AGGREGATORS] private _committers;

    error InvalidConfig(string reason);
    error WrongStatus(Status expected, Status actual);
    error TaskNotRunning(Status status);
    error EmptyDigest();
    error ZeroSamples();
    error TooManySamples(uint64 given, uint32 max);
    error ZeroAddress();
    error NotApprovedDevice(address account);
    error DeviceAlreadyApproved(address account);
    /// @notice baseVersion is not a published version yet.
    error UnknownVersion(uint32 baseVersion, uint32 currentVersion);
    /// @notice currentVersion - baseVersion exceeds the task's maxStaleness.
    error TooStale(uint32 baseVersion, uint32 currentVersion, uint32 maxStaleness);
    /// @notice The filling buffer is full and waits for the pending one: submit again later.
    error BuffersFull(uint32 fillingBuffer, uint32 pendingBuffer);
    /// @notice The device already has an update in the filling buffer.
    error AlreadyBuffered(address device, uint32 buffer);
    error WrongBuffer(uint32 expected, uint32 given);
    error WrongPhase(AggPhase expected, AggPhase actual);
    error DeadlineNotReached(uint64 deadline, uint64 nowTimestamp);
    error InputsMismatch(bytes20 expected, bytes20 given);
    error TooManyAccepted(uint32 accepted, uint32 buffered);
    error TooManyAggregators(uint32 max);
    error ThresholdOutOfRange(uint16 threshold, uint32 aggregators);
    error AggregatorIsSuspended(address aggregator);
    error AlreadyCommitted(address aggregator, uint32 buffer, uint16 attempt);
    error NoCommitment(address aggregator, uint32 buffer);
    error AlreadyRevealed(address aggregator, uint32 buffer);
    error CommitmentMismatch(address aggregator, uint32 buffer);
    error RevealWindowClosed(uint32 buffer);
    /// @notice The buffer's entries are no longer in the ring (see UpdateBuffered events), or it has none there.
    error EntryNotAvailable(uint32 buffer, uint32 position);
    /// @notice The task does not close buffers early (bufferDuration is 0).
    error EarlyCloseDisabled();
    /// @notice A buffer is pending: the filling one can go to aggregation only after it.
    error BufferPending(uint32 pendingBuffer);
    /// @notice An early close needs at least minBufferSize updates.
    error TooFewUpdates(uint32 count, uint32 minimum);

    /// @notice The task's configuration, emitted once at deployment.
    event TaskConfigured(
        address indexed admin,
        bytes32 modelSpecDigest,
        bytes32 initialModelDigest,
        uint32 numVersions,
        uint32 bufferSize,
        uint32 maxStaleness,
        uint32 maxSamplesPerUpdate,
        uint16 strategyId,
        uint16 aggregatorThreshold,
        uint32 aggregationDuration
    );
    /// @notice The staleness weighting and the attempt and fault limits, emitted once at deployment.
    event WeightingConfigured(
        uint16 weightingId, uint32 weightingParamMicro, uint16 maxAggregationAttempts, uint16 maxAggregatorFaults
    );
    event DeviceJoinRequested(address indexed device);
    event DeviceApproved(address indexed device, uint32 version);
    event DeviceRemoved(address indexed device, address indexed by);
    /// @notice The task started: buffer 1 fills on version 0.
    event TaskStarted(bytes32 initialModelDigest, uint32 aggregators);
    /// @notice A buffer started filling.
    event BufferOpened(uint32 indexed buffer, uint32 version);
    /// @notice An update entered `buffer` at `position` (0-based); staleness = currentVersion - baseVersion.
    event UpdateBuffered(
        uint32 indexed buffer,
        address indexed device,
        bytes32 updateDigest,
        uint32 numSamples,
        uint32 baseVersion,
        uint32 staleness,
        uint32 position
    );
    /// @notice The buffer reached bufferSize updates (or was closed early with fewer, see closeBuffer); `inputsHash`
    ///         binds its ordered entries.
    event BufferFull(uint32 indexed buffer, bytes20 inputsHash);
    /// @notice An aggregation attempt of the buffer opened its commit window until `deadline`; its result builds on
    ///         `version` and will be version + 1; `aggregators` is its n.
    event AggregationOpened(uint32 indexed buffer, uint16 attempt, uint32 version, uint64 deadline, uint32 aggregators);
    event ResultCommitted(uint32 indexed buffer, address indexed aggregator, uint16 attempt, bytes32 commitment);
    event RevealOpened(uint32 indexed buffer, uint16 attempt, uint64 deadline, uint32 commits);
    event ResultRevealed(
        uint32 indexed buffer,
        address indexed aggregator,
        bytes32 modelDigest,
        bytes32 reportDigest,
        uint32 acceptedUpdates
    );
    /// @notice k reveals agreed: `version` is published with `modelDigest`; `aggregator` made the last reveal.
    event VersionPublished(
        uint32 indexed version,
        uint32 indexed buffer,
        address aggregator,
        bytes32 modelDigest,
        bytes32 reportDigest,
        bytes20 inputsHash,
        uint32 acceptedUpdates
    );
    event AggregatorFault(
        uint32 indexed buffer,
        address indexed aggregator,
        bytes32 revealedModelDigest,
        bytes32 finalModelDigest,
        uint32 faults
    );
    event AggregatorSuspended(address indexed aggregator, uint32 faults);
    /// @notice The attempt ended without agreement (a further attempt opens, or the buffer is discarded).
    event AggregationFailed(uint32 indexed buffer, uint16 attempt, uint32 commits, uint32 reveals);
    /// @notice The buffer was discarded after its last failed attempt; the version is unchanged.
    event BufferDiscarded(uint32 indexed buffer, uint16 attempts);
    event TaskFinished(bytes32 finalModelDigest, uint32 versions);
    event TaskCancelled(address indexed by, uint32 version);

    /// @param config The task's fixed configuration.
    /// @param admin The coordinator who approves devices and aggregators and starts the task.
    constructor(Config memory config, address admin) {
        if (config.modelSpecDigest == bytes32(0) || config.initialModelDigest == bytes32(0)) {
            revert InvalidConfig("empty digest");
        }
        if (config.numVersions == 0) revert InvalidConfig("numVersions is 0");
        if (config.bufferSize == 0 || config.bufferSize > MAX_BUFFER_SIZE) revert InvalidConfig("bufferSize");
        if (config.maxSamplesPerUpdate == 0) revert InvalidConfig("maxSamplesPerUpdate is 0");
        if (config.weightingId > WEIGHTING_POLYNOMIAL) revert InvalidConfig("weightingId");
        if (config.weightingId == WEIGHTING_POLYNOMIAL && config.weightingParamMicro == 0) {
            revert InvalidConfig("weightingParamMicro is 0");
        }
        if (config.aggregatorThreshold == 0 || config.aggregatorThreshold > MAX_AGGREGATORS) {
            revert InvalidConfig("aggregatorThreshold");
        }
        if (config.aggregationDuration == 0) revert InvalidConfig("aggregationDuration is 0");
        if (config.maxAggregationAttempts == 0) revert InvalidConfig("maxAggregationAttempts is 0");
        if (config.maxAggregatorFaults == 0) revert InvalidConfig("maxAggregatorFaults is 0");
        if (
            config.bufferDuration != 0 && (config.minBufferSize == 0 || config.minBufferSize > config.bufferSize)
        ) {
            revert InvalidConfig("minBufferSize");
        }
        if (admin == address(0)) revert InvalidConfig("admin is zero");

        modelSpecDigest = config.modelSpecDigest;
        initialModelDigest = config.initialModelDigest;
        numVersions = config.numVersions;
        bufferSize = config.bufferSize;
        maxStaleness = config.maxStaleness;
        maxSamplesPerUpdate = config.maxSamplesPerUpdate;
        strategyId = config.strategyId;
        weightingId = config.weightingId;
        weightingParamMicro = config.weightingParamMicro;
        aggregatorThreshold = config.aggregatorThreshold;
        aggregationDuration = config.aggregationDuration;
        maxAggregationAttempts = config.maxAggregationAttempts;
        maxAggregatorFaults = config.maxAggregatorFaults;
        bufferDuration = config.bufferDuration;
        minBufferSize = config.minBufferSize;
        versionDigest[0] = config.initialModelDigest;
        // Placeholders in every ring slot (overwritten by submissions): a device then never pays 20k for a fresh
        // slot. The placeholder device is address(1): never a real entry (views check positions against counts).
        for (uint256 ring; ring < 2; ++ring) {
            for (uint256 position; position < config.bufferSize; ++position) {
                _entries[ring][position] = Entry({
                    device: address(1),
                    numSamples: 0,
                    baseVersion: 0,
                    staleness: 0,
                    updateDigest: bytes32(uint256(1))
                });
            }
        }
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        emit TaskConfigured(
            admin,
            config.modelSpecDigest,
            config.initialModelDigest,
            config.numVersions,
            config.bufferSize,
            config.maxStaleness,
            config.maxSamplesPerUpdate,
            config.strategyId,
            config.aggregatorThreshold,
            config.aggregationDuration
        );
        emit WeightingConfigured(
            config.weightingId, config.weightingParamMicro, config.maxAggregationAttempts, config.maxAggregatorFaults
        );
    }

    // ---------------------------------------------------------------- participants

    /// @notice Ask the admin to approve the caller as a device of this task.
    /// @dev Reverts: DeviceAlreadyApproved, TaskNotRunning (finished or cancelled).
    function requestJoin() external {
        if (_devices[msg.sender].approved) revert DeviceAlreadyApproved(msg.sender);
        _requireNotOver();
        emit DeviceJoinRequested(msg.sender);
    }

    /// @notice Approve devices; they may submit at once, at any time (joining mid-run is the normal case).
    /// @param devices Accounts to approve; already approved ones are skipped.
    /// @dev Reverts: AccessControlUnauthorizedAccount, TaskNotRunning (over), ZeroAddress.
    function approveDevices(address[] calldata devices) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _requireNotOver();
        uint32 version = _filling.version;
        uint32 added;
        for (uint256 i; i < devices.length; ++i) {
            if (devices[i] == address(0)) revert ZeroAddress();
            DeviceRecord storage record = _devices[devices[i]];
            if (record.approved) continue;
            record.approved = true;
            record.approvedAtVersion = version;
            ++added;
            emit DeviceApproved(devices[i], version);
        }
        deviceCount += added;
    }

    /// @notice Remove a device (admin) or leave the task (the device itself). Its buffered updates stay in their
    ///         buffers (they were valid when submitted); it can submit nothing more.
    /// @param device The device to remove.
    /// @dev Reverts: AccessControlUnauthorizedAccount (another account, not the admin), NotApprovedDevice.
    function removeDevice(address device) external {
        if (msg.sender != device) _checkRole(DEFAULT_ADMIN_ROLE);
        DeviceRecord storage record = _devices[device];
        if (!record.approved) revert NotApprovedDevice(device);
        record.approved = false;
        --deviceCount;
        emit DeviceRemoved(device, msg.sender);
    }

    /// @notice Start the task: buffer 1 starts filling on version 0.
    /// @dev Reverts: AccessControlUnauthorizedAccount, WrongStatus (not Registering), ThresholdOutOfRange unless
    ///      n / 2 < k <= n (n = aggregatorCount, k = aggregatorThreshold).
    function start() external onlyRole(DEFAULT_ADMIN_ROLE) {
        Status status = _agg.status;
        if (status != Status.Registering) revert WrongStatus(Status.Registering, status);
        uint32 n = aggregatorCount;
        if (n < aggregatorThreshold || n >= 2 * uint32(aggregatorThreshold)) {
            revert ThresholdOutOfRange(aggregatorThreshold, n);
        }
        _agg.status = Status.Running;
        _filling = Filling({inputsHash: initialInputsHash(1), buffer: 1, count: 0, version: 0});
        fillingOpenedAt = uint64(block.timestamp);
        emit TaskStarted(initialModelDigest, n);
        emit BufferOpened(1, 0);
    }

    /// @notice Cancel the task: no submission, commitment or reveal is accepted any more.
    /// @dev Reverts: AccessControlUnauthorizedAccount, TaskNotRunning (already finished or cancelled).
    function cancel() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _requireNotOver();
        _agg.status = Status.Cancelled;
        _agg.phase = AggPhase.None;
        emit TaskCancelled(msg.sender, _filling.version);
    }

    // ---------------------------------------------------------------- submissions

    /// @notice Buffer the caller's update, trained from version `baseVersion`, in the filling buffer. Accepted at
    ///         any time while the task runs, within the staleness bound; the K-th update of a buffer closes it.
    /// @param baseVersion The published version the update was trained from.
    /// @param updateDigest sha256 digest of the update's CIDv0 on IPFS.
    /// @param numSamples Number of samples the update was trained on (its FedAvg weight), 1..maxSamplesPerUpdate.
    /// @dev Reverts, in this order: TaskNotRunning, EmptyDigest, ZeroSamples, TooManySamples, NotApprovedDevice,
    ///      UnknownVersion, TooStale, BuffersFull, AlreadyBuffered. Checks, effects (entry, device record, filling
    ///      buffer, events), then the buffer's closing if it is full; no interaction.
    function submitUpdate(uint32 baseVersion, bytes32 updateDigest, uint64 numSamples) external {
        Status status = _agg.status;
        if (status != Status.Running) revert TaskNotRunning(status);
        if (updateDigest == bytes32(0)) revert EmptyDigest();
        if (numSamples == 0) revert ZeroSamples();
        if (numSamples > maxSamplesPerUpdate) revert TooManySamples(numSamples, maxSamplesPerUpdate);
        DeviceRecord storage record = _devices[msg.sender];
        DeviceRecord memory device = record;
        if (!device.approved) revert NotApprovedDevice(msg.sender);
        Filling memory filling = _filling;
        if (baseVersion > filling.version) revert UnknownVersion(baseVersion, filling.version);
        uint32 staleness;
        unchecked {
            staleness = filling.version - baseVersion;
        }
        if (staleness > maxStaleness) revert TooStale(baseVersion, filling.version, maxStaleness);
        uint32 k = bufferSize;
        if (filling.count >= k) revert BuffersFull(filling.buffer, _agg.buffer);
        if (device.lastBuffer == filling.buffer) revert AlreadyBuffered(msg.sender, filling.buffer);

        uint32 position = filling.count;
        // numSamples <= maxSamplesPerUpdate <= 2^32 - 1
        uint32 samples = uint32(numSamples);
        _entries[filling.buffer & 1][position] = Entry({
            device: msg.sender,
            numSamples: samples,
            baseVersion: baseVersion,
            staleness: staleness,
            updateDigest: updateDigest
        });
        record.lastBuffer = filling.buffer;
        filling.inputsHash = bytes20(
            keccak256(
                abi.encodePacked(filling.inputsHash, msg.sender, updateDigest, samples, baseVersion, staleness)
            )
        );
        filling.count = position + 1;
        _filling = filling;
        emit UpdateBuffered(filling.buffer, msg.sender, updateDigest, samples, baseVersion, staleness, position);
        if (filling.count == k) _bufferFull(filling);
    }

    /// @notice Close the filling buffer early, with fewer than bufferSize updates, so that sleeping devices do not
    ///         stall the task: allowed once it has been filling for bufferDuration seconds with at least
    ///         minBufferSize updates, while no other buffer is pending. It goes to aggregation at once (BufferFull,
    ///         AggregationOpened) and the next buffer opens. Anyone may call it.
    /// @param buffer The filling buffer.
    /// @dev Reverts: TaskNotRunning, EarlyCloseDisabled, WrongBuffer, BufferPending (a buffer is being
    ///      aggregated: the filling one waits for it, full or not), TooFewUpdates, DeadlineNotReached.
    function closeBuffer(uint32 buffer) external {
        Status status = _agg.status;
        if (status != Status.Running) revert TaskNotRunning(status);
        if (bufferDuration == 0) revert EarlyCloseDisabled();
        Filling memory filling = _filling;
        if (buffer != filling.buffer) revert WrongBuffer(filling.buffer, buffer);
        if (_agg.phase != AggPhase.None) revert BufferPending(_agg.buffer);
        if (filling.count < minBufferSize) revert TooFewUpdates(filling.count, minBufferSize);
        uint64 deadline = fillingOpenedAt + bufferDuration;
        if (block.timestamp < deadline) revert DeadlineNotReached(deadline, uint64(block.timestamp));

        _recordFull(filling);
        _aggregateFilling(filling);
    }

    // ---------------------------------------------------------------- aggregation (commit-reveal)

    /// @notice Commit to a result for the pending buffer's current attempt, without disclosing it. Accepted until
    ///         the commit window is closed; the reveal window opens as soon as every aggregator (the attempt's n)
    ///         has committed.
    /// @param buffer The pending buffer.
    /// @param commitment `resultCommitment(buffer, attempt, msg.sender, inputsHash, modelDigest, reportDigest,
    ///        acceptedUpdates, salt)`, with a secret random salt.
    /// @dev Reverts: AccessControlUnauthorizedAccount, TaskNotRunning, WrongPhase(Committing), WrongBuffer,
    ///      EmptyDigest, AggregatorIsSuspended, AlreadyCommitted. A commitment to a published buffer that the caller
    ///      never revealed is a fault, recorded now (no commitment is made if it suspends the caller).
    function commitResult(uint32 buffer, bytes32 commitment) external onlyRole(AGGREGATOR_ROLE) {
        AggState memory state = _agg;
        if (state.status != Status.Running) revert TaskNotRunning(state.status);
        if (state.phase != AggPhase.Committing) revert WrongPhase(AggPhase.Committing, state.phase);
        if (buffer != state.buffer) revert WrongBuffer(state.buffer, buffer);
        if (commitment == bytes32(0)) revert EmptyDigest();
        AggregatorRecord storage record = _aggregators[msg.sender];
        if (record.suspended) revert AggregatorIsSuspended(msg.sender);
        uint32 last = record.committedBuffer;
        if (last == buffer && record.committedAttempt == state.attempt) {
            revert AlreadyCommitted(msg.sender, buffer, state.attempt);
        }
        // (only a commitment to the published attempt: one to an earlier, failed attempt was faulted, if withheld,
        // when that attempt's reveal window closed)
        if (
            !record.revealed && last != 0 && finalResultKey[last] != 0
                && _buffers[last].attempt == record.committedAttempt
        ) {
            if (_recordFault(last, msg.sender, record, bytes32(0), _publishedDigest(last))) return;
        }

        record.committedBuffer = buffer;
        record.committedAttempt = state.attempt;
        record.revealed = false;
        record.commitment = commitment;
        // the attempt's n <= MAX_AGGREGATORS and the window closes at n commitments, so the index is in range
        _committers[state.commits] = msg.sender;
        uint32 commits = state.commits + 1;
        emit ResultCommitted(buffer, msg.sender, state.attempt, commitment);
        if (commits >= state.aggregators) {
            _openReveal(state, commits);
        } else {
            _agg.commits = commits;
        }
    }

    /// @notice Reveal the committed result. In the reveal window the reveal votes for its result key; the first
    ///         key with aggregatorThreshold votes publishes the next version. Reveals of commitments to the
    ///         attempt that published a buffer are still accepted afterwards, so a dissenting aggregator cannot avoid
    ///         its fault by revealing late.
    /// @param buffer The buffer the commitment was made for.
    /// @param inputsHash The buffer's inputs hash the aggregator used (must equal the chain's in the window).
    /// @param modelDigest Digest of the new global model's CIDv0.
    /// @param reportDigest Digest of the aggregation report's CIDv0 (weights, accepted/rejected entries); not part
    ///        of the agreement.
    /// @param acceptedUpdates How many of the buffer's entries went into the aggregate.
    /// @param salt The commitment's salt.
    /// @dev Reverts: AccessControlUnauthorizedAccount, EmptyDigest, AggregatorIsSuspended, NoCommitment,
    ///      AlreadyRevealed, CommitmentMismatch; in the window RevealWindowClosed (deadline passed), InputsMismatch,
    ///      TooManyAccepted; WrongPhase(Revealing) for the pending buffer outside its reveal window;
    ///      RevealWindowClosed for an attempt that failed (its withheld reveal was faulted when its window closed),
    ///      even if a later attempt published the buffer.
    function revealResult(
        uint32 buffer,
        bytes20 inputsHash,
        bytes32 modelDigest,
        bytes32 reportDigest,
        uint32 acceptedUpdates,
        bytes32 salt
    ) external onlyRole(AGGREGATOR_ROLE) {
        if (modelDigest == bytes32(0) || reportDigest == bytes32(0)) revert EmptyDigest();
        _reveal(
            buffer,
            Result({
                inputsHash: inputsHash,
                modelDigest: modelDigest,
                reportDigest: reportDigest,
                acceptedUpdates: acceptedUpdates
            }),
            salt
        );
    }

    /// @notice Close the pending buffer's commit or reveal window once its deadline has passed. A commit window
    ///         with at least aggregatorThreshold commitments opens the reveal window; otherwise (or for a reveal
    ///         window) the attempt fails: every committer that did not reveal is faulted, and the buffer is
    ///         aggregated again in a fresh attempt, or discarded after maxAggregationAttempts attempts (the next
    ///         full buffer, if any, then goes to aggregation). Anyone may call it.
    /// @param buffer The pending buffer.
    /// @dev Reverts: TaskNotRunning, WrongBuffer, WrongPhase(Committing) (no buffer pending), DeadlineNotReached.
    function closeAggregationWindow(uint32 buffer) external {
        AggState memory state = _agg;
        if (state.status != Status.Running) revert TaskNotRunning(state.status);
        if (state.phase == AggPhase.None) revert WrongPhase(AggPhase.Committing, state.phase);
        if (buffer != state.buffer) revert WrongBuffer(state.buffer, buffer);
        if (block.timestamp < state.deadline) revert DeadlineNotReached(state.deadline, uint64(block.timestamp));
        if (state.phase == AggPhase.Committing && state.commits >= aggregatorThreshold) {
            _openReveal(state, state.commits);
            return;
        }
        if (state.phase == AggPhase.Revealing) {
            for (uint256 i; i < state.commits; ++i) {
                address committer = _committers[i];
                AggregatorRecord storage record = _aggregators[committer];
                if (!record.revealed) _recordFault(buffer, committer, record, bytes32(0), bytes32(0));
            }
        }
        emit AggregationFailed(buffer, state.attempt, state.commits, state.reveals);
        if (state.attempt < maxAggregationAttempts) {
            _openAggregation(buffer, state.attempt + 1, _filling.version);
            return;
        }
        _buffers[buffer].status = BufferStatus.Discarded;
        ++discardedBuffers;
        emit BufferDiscarded(buffer, state.attempt);
        _next(_filling);
    }

    // ---------------------------------------------------------------- views

    /// @notice The latest published version (0 = the initial model).
    function currentVersion() external view returns (uint32) {
        return _filling.version;
    }

    /// @notice The digest of the latest published model.
    function globalModelDigest() external view returns (bytes32) {
        return versionDigest[_filling.version];
    }

    /// @notice The task's status and the filling buffer.
    /// @return status Registering, Running, Finished or Cancelled.
    /// @return version The latest published version.
    /// @return buffer The filling buffer (0 before start).
    /// @return count Its updates so far (bufferSize: full, waiting for the pending buffer).
    /// @return inputsHash Its running inputs hash.
    function fillingBuffer()
        external
        view
        returns (Status status, uint32 version, uint32 buffer, uint32 count, bytes20 inputsHash)
    {
        Filling memory filling = _filling;
        return (_agg.status, filling.version, filling.buffer, filling.count, filling.inputsHash);
    }

    /// @notice The pending buffer's aggregation (buffer 0 and phase None when no buffer is pending).
    /// @return buffer The pending buffer.
    /// @return phase None, Committing or Revealing.
    /// @return attempt Its current attempt (1-based).
    /// @return deadline End of the commit or reveal window.
    /// @return commits Commitments of this attempt.
    /// @return reveals Reveals of this attempt (before finalisation).
    /// @return threshold k.
    /// @return aggregators The attempt's n.
    function aggregationState()
        external
        view
        returns (
            uint32 buffer,
            AggPhase phase,
            uint16 attempt,
            uint64 deadline,
            uint32 commits,
            uint32 reveals,
            uint16 threshold,
            uint32 aggregators
        )
    {
        AggState memory s = _agg;
        return (s.buffer, s.phase, s.attempt, s.deadline, s.commits, s.reveals, aggregatorThreshold, s.aggregators);
    }

    /// @notice A buffer's record: for the filling buffer its live count and inputs hash.
    /// @param buffer The buffer.
    /// @return status Filling (also for buffers not yet opened), Full, Aggregating, Published or Discarded.
    /// @return count Its updates.
    /// @return inputsHash Its inputs hash (final once full).
    /// @return version Published: the version it produced; Aggregating: the version it builds on.
    function bufferInfo(uint32 buffer)
        external
        view
        returns (BufferStatus status, uint32 count, bytes20 inputsHash, uint32 version)
    {
        Filling memory filling = _filling;
        if (buffer == filling.buffer && filling.count < bufferSize) {
            return (BufferStatus.Filling, filling.count, filling.inputsHash, filling.version);
        }
        BufferRecord memory record = _buffers[buffer];
        return (record.status, record.count, record.inputsHash, record.version);
    }

    /// @notice One entry of a buffer still in the ring (the filling buffer and the one before it).
    /// @param buffer The buffer.
    /// @param position The entry's 0-based position.
    /// @dev Reverts EntryNotAvailable for an older buffer (read its UpdateBuffered events) or a position past its
    ///      count.
    function bufferEntry(uint32 buffer, uint32 position)
        external
        view
        returns (address device, bytes32 updateDigest, uint32 numSamples, uint32 baseVersion, uint32 staleness)
    {
        Filling memory filling = _filling;
        uint32 count;
        if (buffer == filling.buffer && buffer != 0) {
            count = filling.count;
        } else if (buffer != 0 && buffer + 1 == filling.buffer) {
            count = _buffers[buffer].count;
        }
        if (position >= count) revert EntryNotAvailable(buffer, position);
        Entry memory entry = _entries[buffer & 1][position];
        return (entry.device, entry.updateDigest, entry.numSamples, entry.baseVersion, entry.staleness);
    }

    /// @notice The staleness weighting every aggregator applies (see the contract's notes).
    /// @return id WEIGHTING_CONSTANT or WEIGHTING_POLYNOMIAL.
    /// @return paramMicro Its parameter in millionths (the polynomial's exponent a).
    function stalenessWeighting() external view returns (uint16 id, uint32 paramMicro) {
        return (weightingId, weightingParamMicro);
    }

    /// @notice A device's record.
    /// @param device The account to look up.
    function deviceInfo(address device)
        external
        view
        returns (bool approved, uint32 lastBuffer, uint32 approvedAtVersion)
    {
        DeviceRecord memory record = _devices[device];
        return (record.approved, record.lastBuffer, record.approvedAtVersion);
    }

    /// @notice An aggregator's record.
    /// @param aggregator The account to look up.
    function aggregatorInfo(address aggregator)
        external
        view
        returns (
            uint32 committedBuffer,
            uint16 committedAttempt,
            bool revealed,
            uint32 faults,
            bool suspended,
            bytes32 commitment
        )
    {
        AggregatorRecord memory r = _aggregators[aggregator];
        return (r.committedBuffer, r.committedAttempt, r.revealed, r.faults, r.suspended, r.commitment);
    }

    /// @notice The running hash a buffer's entries start from (task- and buffer-specific, never zero).
    /// @param buffer The buffer.
    function initialInputsHash(uint32 buffer) public view returns (bytes20) {
        return bytes20(keccak256(abi.encode(address(this), buffer)));
    }

    /// @notice The commitment `commitResult` expects: binds the task, the buffer, the attempt and the aggregator.
    /// @param buffer The buffer.
    /// @param attempt The aggregation attempt.
    /// @param aggregator The committing aggregator.
    /// @param inputsHash The buffer's inputs hash.
    /// @param modelDigest Digest of the aggregate's CIDv0.
    /// @param reportDigest Digest of the report's CIDv0.
    /// @param acceptedUpdates How many entries went into the aggregate.
    /// @param salt A secret random salt.
    function resultCommitment(
        uint32 buffer,
        uint16 attempt,
        address aggregator,
        bytes20 inputsHash,
        bytes32 modelDigest,
        bytes32 reportDigest,
        uint32 acceptedUpdates,
        bytes32 salt
    ) public view returns (bytes32) {
        return keccak256(
            abi.encode(
                address(this), buffer, attempt, aggregator, inputsHash, modelDigest, reportDigest, acceptedUpdates, salt
            )
        );
    }

    /// @notice The key reveals agree on: keccak256(abi.encode(inputsHash, modelDigest, acceptedUpdates)).
    /// @param inputsHash The buffer's inputs hash.
    /// @param modelDigest Digest of the aggregate's CIDv0.
    /// @param acceptedUpdates How many entries went into the aggregate.
    function resultKey(bytes20 inputsHash, bytes32 modelDigest, uint32 acceptedUpdates)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(inputsHash, modelDigest, acceptedUpdates));
    }

    // ---------------------------------------------------------------- internals

    /// @dev Keeps aggregatorCount (n) equal to the role holders not suspended: at most MAX_AGGREGATORS, and once
    ///      started below 2k. A (re-)grant starts with no faults.
    function _grantRole(bytes32 role, address account) internal override returns (bool granted) {
        granted = super._grantRole(role, account);
        if (granted && role == AGGREGATOR_ROLE) {
            uint32 n = aggregatorCount + 1;
            if (n > MAX_AGGREGATORS) revert TooManyAggregators(MAX_AGGREGATORS);
            if (_agg.status != Status.Registering && n >= 2 * uint32(aggregatorThreshold)) {
                revert ThresholdOutOfRange(aggregatorThreshold, n);
            }
            aggregatorCount = n;
            AggregatorRecord storage record = _aggregators[account];
            record.suspended = false;
            record.faults = 0;
        }
    }

    /// @dev A revoked aggregator is marked suspended (not counted in n). Never refused.
    function _revokeRole(bytes32 role, address account) internal override returns (bool revoked) {
        revoked = super._revokeRole(role, account);
        if (revoked && role == AGGREGATOR_ROLE) {
            AggregatorRecord storage record = _aggregators[account];
            if (!record.suspended) --aggregatorCount;
            record.suspended = true;
        }
    }

    function _reveal(uint32 buffer, Result memory result, bytes32 salt) private {
        AggregatorRecord storage record = _aggregators[msg.sender];
        if (record.suspended) revert AggregatorIsSuspended(msg.sender);
        if (record.committedBuffer != buffer || record.commitment == bytes32(0)) {
            revert NoCommitment(msg.sender, buffer);
        }
        if (record.revealed) revert AlreadyRevealed(msg.sender, buffer);
        uint16 attempt = record.committedAttempt;
        bytes32 expected = resultCommitment(
            buffer,
            attempt,
            msg.sender,
            result.inputsHash,
            result.modelDigest,
            result.reportDigest,
            result.acceptedUpdates,
            salt
        );
        if (record.commitment != expected) revert CommitmentMismatch(msg.sender, buffer);
        bytes32 key = resultKey(result.inputsHash, result.modelDigest, result.acceptedUpdates);

        AggState memory state = _agg;
        bool current = state.status == Status.Running && buffer == state.buffer && attempt == state.attempt;
        if (current && state.phase == AggPhase.Revealing) {
            _revealInWindow(state, record, key, result);
            return;
        }
        bytes32 finalKey = finalResultKey[buffer];
        if (finalKey != bytes32(0) && _buffers[buffer].attempt == attempt) {
            // late reveal for a published buffer: accepted so that a dissent still records its fault
            record.revealed = true;
            emit ResultRevealed(buffer, msg.sender, result.modelDigest, result.reportDigest, result.acceptedUpdates);
            if (key != finalKey) {
                _recordFault(buffer, msg.sender, record, result.modelDigest, _publishedDigest(buffer));
            }
            return;
        }
        if (current) revert WrongPhase(AggPhase.Revealing, state.phase);
        revert RevealWindowClosed(buffer);
    }

    function _revealInWindow(
        AggState memory state,
        AggregatorRecord storage record,
        bytes32 key,
        Result memory result
    ) private {
        uint32 buffer = state.buffer;
        if (block.timestamp >= state.deadline) revert RevealWindowClosed(buffer);
        BufferRecord memory buf = _buffers[buffer];
        if (result.inputsHash != buf.inputsHash) revert InputsMismatch(buf.inputsHash, result.inputsHash);
        if (result.acceptedUpdates > buf.count) revert TooManyAccepted(result.acceptedUpdates, buf.count);

        record.revealed = true;
        emit ResultRevealed(buffer, msg.sender, result.modelDigest, result.reportDigest, result.acceptedUpdates);
        uint32 votes = _votes[buffer][state.attempt][key] + 1;
        if (votes >= aggregatorThreshold) {
            _publish(state, buf, key, result);
        } else {
            _votes[buffer][state.attempt][key] = votes;
            // reveals <= commits <= MAX_AGGREGATORS
            _reveals[state.reveals] = RevealEntry({
                aggregator: msg.sender,
                acceptedUpdates: result.acceptedUpdates,
                modelDigest: result.modelDigest
            });
            _agg.reveals = state.reveals + 1;
        }
    }

    /// @dev The filling buffer reached K: record it as full; aggregate it now if no buffer is pending.
    function _bufferFull(Filling memory filling) private {
        _recordFull(filling);
        if (_agg.phase == AggPhase.None) _aggregateFilling(filling);
    }

    /// @dev Records the filling buffer as closed (BufferFull): its entries and inputs hash are final.
    function _recordFull(Filling memory filling) private {
        uint32 buffer = filling.buffer;
        _buffers[buffer] = BufferRecord({
            inputsHash: filling.inputsHash,
            count: filling.count,
            status: BufferStatus.Full,
            version: 0,
            attempt: 0
        });
        emit BufferFull(buffer, filling.inputsHash);
    }

    /// @dev No buffer is pending any more (published or discarded, or none was): if the filling buffer is full it
    ///      goes to aggregation and the next buffer opens. `filling` is the current _filling.
    function _next(Filling memory filling) private {
        if (filling.count < bufferSize) {
            _agg.phase = AggPhase.None;
            _agg.buffer = 0;
            return;
        }
        _aggregateFilling(filling);
    }

    /// @dev The closed filling buffer goes to aggregation (first attempt) and the next buffer opens.
    function _aggregateFilling(Filling memory filling) private {
        uint32 buffer = filling.buffer;
        _openAggregation(buffer, 1, filling.version);
        _filling = Filling({
            inputsHash: initialInputsHash(buffer + 1),
            buffer: buffer + 1,
            count: 0,
            version: filling.version
        });
        fillingOpenedAt = uint64(block.timestamp);
        emit BufferOpened(buffer + 1, filling.version);
    }

    /// @dev Opens an attempt's commit window for `buffer`, whose result builds on `version`; n is fixed now.
    function _openAggregation(uint32 buffer, uint16 attempt, uint32 version) private {
        AggState memory state = _agg;
        uint64 deadline = uint64(block.timestamp) + aggregationDuration;
        uint32 n = aggregatorCount;
        state.phase = AggPhase.Committing;
        state.buffer = buffer;
        state.attempt = attempt;
        state.deadline = deadline;
        state.commits = 0;
        state.reveals = 0;
        state.aggregators = n;
        _agg = state;
        BufferRecord storage record = _buffers[buffer];
        record.status = BufferStatus.Aggregating;
        record.version = version;
        emit AggregationOpened(buffer, attempt, version, deadline, n);
    }

    function _openReveal(AggState memory state, uint32 commits) private {
        uint64 deadline = uint64(block.timestamp) + aggregationDuration;
        state.phase = AggPhase.Revealing;
        state.deadline = deadline;
        state.commits = commits;
        state.reveals = 0;
        _agg = state;
        emit RevealOpened(state.buffer, state.attempt, deadline, commits);
    }

    /// @dev k reveals agreed on `key`: publish the next version, fault the earlier dissenting revealers, then
    ///      finish the task or move to the next buffer.
    function _publish(
        AggState memory state,
        BufferRecord memory buf,
        bytes32 key,
        Result memory result
    ) private {
        uint32 buffer = state.buffer;
        bytes32 modelDigest = result.modelDigest;
        uint32 acceptedUpdates = result.acceptedUpdates;
        Filling memory filling = _filling;
        uint32 version = buf.version + 1;
        finalResultKey[buffer] = key;
        versionDigest[version] = modelDigest;
        _buffers[buffer].status = BufferStatus.Published;
        _buffers[buffer].version = version;
        _buffers[buffer].attempt = state.attempt;
        filling.version = version;
        _filling.version = version;
        emit VersionPublished(
            version, buffer, msg.sender, modelDigest, result.reportDigest, buf.inputsHash, acceptedUpdates
        );

        // earlier revealers of this attempt used the buffer's inputs hash: model and accepted count make the key
        for (uint256 i; i < state.reveals; ++i) {
            RevealEntry memory entry = _reveals[i];
            if (entry.modelDigest != modelDigest || entry.acceptedUpdates != acceptedUpdates) {
                _recordFault(buffer, entry.aggregator, _aggregators[entry.aggregator], entry.modelDigest, modelDigest);
            }
        }

        if (version >= numVersions) {
            _agg.status = Status.Finished;
            _agg.phase = AggPhase.None;
            emit TaskFinished(modelDigest, version);
            return;
        }
        _next(filling);
    }

    /// @dev Records a fault and suspends the aggregator at maxAggregatorFaults. Returns whether it suspended it.
    function _recordFault(
        uint32 buffer,
        address aggregator,
        AggregatorRecord storage record,
        bytes32 revealedModelDigest,
        bytes32 finalModelDigest
    ) private returns (bool suspended) {
        uint32 faults = record.faults + 1;
        record.faults = faults;
        emit AggregatorFault(buffer, aggregator, revealedModelDigest, finalModelDigest, faults);
        if (faults >= maxAggregatorFaults && !record.suspended) {
            record.suspended = true;
            --aggregatorCount;
            emit AggregatorSuspended(aggregator, faults);
            return true;
        }
    }

    /// @dev The model digest a published buffer produced.
    function _publishedDigest(uint32 buffer) private view returns (bytes32) {
        return versionDigest[_buffers[buffer].version];
    }

    function _requireNotOver() private view {
        Status status = _agg.status;
        if (status == Status.Finished || status == Status.Cancelled) revert TaskNotRunning(status);
    }
}
