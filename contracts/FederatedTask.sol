// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title FederatedTask
/// @notice One federated-learning training task: its participants, its rounds, and the digest of every update
///         and every aggregate. Weights never touch the chain: devices and aggregators exchange them over IPFS and
///         the chain records the 32-byte sha256 digest of each CIDv0.
/// @dev Round lifecycle: Registering --start--> Open --(maxUpdates reached, or deadline passed with at least
///      minUpdates)--> Aggregating (commit window) --(every aggregator committed, or the window passed with at least
///      aggregatorThreshold commitments)--> Revealing --(aggregatorThreshold reveals agree)--> Open (next round) ...
///      --> Finished. A deadline that passes with fewer than minUpdates extends the round (a secure-aggregation
///      round fails instead, see below). A commit window that
///      passes with fewer than aggregatorThreshold commitments, or a reveal window that passes without
///      aggregatorThreshold agreeing reveals, fails the round: the next round opens with the unchanged global model
///      (see `failedRounds`). The admin may `cancel` a task whose aggregators keep failing.
///
///      Aggregators agree by commit-reveal: each holder of AGGREGATOR_ROLE commits
///      `resultCommitment(round, itself, inputsHash, modelDigest, reportDigest, acceptedUpdates, epsilonMicro, salt)`
///      and later reveals the preimage. Reveals agree when their result key `keccak256(abi.encode(inputsHash,
///      modelDigest, acceptedUpdates, epsilonMicro))` is equal (the report is not part of the agreement: it may carry
///      per-aggregator data).
///      The first key to collect aggregatorThreshold reveals is final; every reveal of that round with another key,
///      before or after finalisation, records a fault against its aggregator. A withheld reveal is a fault too:
///      closing a reveal window faults every committer that did not reveal, and a committer that never revealed
///      its commitment to a finalised round is faulted when it next commits. At maxAggregatorFaults faults an
///      aggregator is suspended: it can neither commit nor reveal and no longer counts in n from the next round,
///      until the admin revokes and grants its role again (or replaces it).
///
///      n (aggregatorCount, the role holders not suspended) is fixed for a round when it opens. start() requires
///      n / 2 < k <= n; once started, a grant that would make n >= 2k is refused (k aggregators would be a
///      minority), while a revocation or suspension may leave n < k: such rounds fail until the admin acts.
///
///      Privacy (all optional, fixed at deployment):
///      - Key directory: devices and aggregators publish an X25519 public key (`setEncryptionKey`) that peers use to
///        encrypt what they send each other off-chain (secure-aggregation key shares, unmask shares).
///      - Secure aggregation (`secureAggregation`): each round starts with a setup window, the first half of the
///        round (roundDuration - roundDuration / 2 seconds; it ends at `setupDeadline`). In it a device announces
///        its round setup (`submitSetup`: digest of its public mask keys and encrypted key shares on IPFS); the
///        window's end freezes the setup set, whatever any device does (no device can freeze it early or reopen
///        it). From then on, and only then, a device of the set submits its update masked against exactly the
///        frozen set (`submitMaskedUpdate` with `setupCount`), and after the round closed publishes the shares that
///        let the aggregators remove the masks (`submitUnmaskShares`). A secure round is never extended: no setup
///        can join a frozen set, so waiting longer could only wait on devices that already had their chance. At
///        its deadline it goes to aggregation with at least minUpdates masked updates, and otherwise fails
///        (AggregationFailed with no commitment, the DP ledger charged as for any failed round): the next round
///        opens with the unchanged model and a fresh setup window. The chain orders and counts these messages;
///        their contents stay off-chain.
///      - Differential-privacy ledger (`epsilonBudgetMicro` > 0): every agreed result carries the cumulative epsilon
///        after its round (in millionths, computed by the aggregators with the privacy accountant, rounded up),
///        which must exceed the last agreed one and stay within the increment bound and the budget. The
///        contract records it and opens a further round only while the spent epsilon plus the last measured
///        per-round increment stays within the budget (RDP composition makes the cumulative epsilon concave in the
///        number of rounds, so the next increment is at most the last one); otherwise the task finishes
///        (PrivacyBudgetExhausted). A failed round spends one increment: its devices uploaded noised updates, so
///        the round cost privacy although no result was agreed. That charge is an upper bound, and the true epsilon
///        after a later round may lie below it: a reveal is refused (EpsilonTooLow) only below the last *agreed*
///        epsilon (or below firstRoundEpsilonMicro), the charge is kept when higher, and the increment bound is
///        re-measured only between two agreed values. Without a budget, aggregators reveal 0 and nothing is checked.
///
///      Relayed batches (tasks without secure aggregation): a device signs its update off chain as the EIP-712
///      struct `Update(uint32 round,bytes32 updateDigest,uint64 numSamples)` under the domain
///      {name: "fedchain", version: "1", chainId, verifyingContract: this task}, so a signature is valid for one
///      task, one round and one chain only. A holder of RELAYER_ROLE collects signed updates, publishes them as one
///      batch file on IPFS and records the batch in one transaction (`submitUpdateBatch`): the digest of the file,
///      the Merkle root of its entries, their number and their total sample count. The chain does not look at the
///      entries: the aggregators verify each entry off chain, deterministically, and exclude (with a reason) an
///      entry whose signature does not recover to its device, whose device is not approved, whose device already
///      appeared earlier in the round (directly or in an earlier entry or batch), or whose device also submitted
///      directly. Anyone can check an entry on chain with `verifyBatchEntry`. Leaves are
///      `keccak256(bytes.concat(keccak256(abi.encode(device, updateDigest, numSamples, keccak256(signature)))))`
///      over entries sorted by device address, hashed in sorted pairs (OpenZeppelin MerkleProof). A batch counts
///      its `entries` towards maxUpdates and its `totalSamples` towards the round's total; the count is a claim of
///      the relayer (trusted by role) and the aggregators report how many entries they accepted.
///      Under secure aggregation batches are refused (BatchesNeedPlainUpdates): a masked update must be masked
///      against the setup set frozen on chain and its device must later publish unmask shares, which the contract
///      checks per device (`lastRound`); entries of a batch have no per-device record on chain, so neither check
///      could be made, and a dropped or forged entry would leave masks that never cancel.
///
///      Single aggregator (n = k = 1): commit-reveal protects nothing when one aggregator decides alone, so the
///      aggregator may instead finalise in one transaction with `submitResult` (the same checks as a reveal).
///
///      Storage is packed so that `submitUpdate` writes two slots that are already non-zero and reads no other: the
///      device record and the round's submission accumulator, which also carries the number of the round while it
///      is open (`openRound`), so the round's phase need not be read. No function loops over devices; the only loops
///      (fault checks at finalisation, withheld-reveal faults when a reveal window closes) are over the round's
///      earlier revealers or its committers, at most MAX_AGGREGATORS.
///
///      The EIP-712 domain is built here rather than by inheriting OpenZeppelin's EIP712: in OpenZeppelin 5.7 that
///      contract imports Strings and Bytes, whose inline assembly uses MCOPY (cancun), and the contracts must
///      compile for shanghai (Ganache). The domain and hashes are the standard ones (OpenZeppelin's
///      `_hashTypedDataV4`), and `eip712Domain()` follows ERC-5267.
contract FederatedTask is AccessControl {
    /// @notice Largest per-update cap a task may configure (`maxSamplesPerUpdate`). Capping it keeps a round's
    ///         uint64 total from overflowing, which would otherwise let one device make every later submission of
    ///         the round revert.
    uint64 public constant MAX_SAMPLES_PER_UPDATE = type(uint32).max;

    /// @notice Role allowed to commit and reveal aggregation results.
    bytes32 public constant AGGREGATOR_ROLE = keccak256("AGGREGATOR_ROLE");

    /// @notice Role allowed to record relayed batches of signed device updates (`submitUpdateBatch`).
    bytes32 public constant RELAYER_ROLE = keccak256("RELAYER_ROLE");

    // EIP-712 type hash of the struct a device signs for a relayed update (see updateTypeHash).
    bytes32 private constant UPDATE_TYPEHASH = keccak256("Update(uint32 round,bytes32 updateDigest,uint64 numSamples)");
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant DOMAIN_NAME_HASH = keccak256("fedchain");
    bytes32 private constant DOMAIN_VERSION_HASH = keccak256("1");

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
        bool secureAggregation; // devices submit setups, masked updates and unmask shares instead of plain updates
        uint64 epsilonBudgetMicro; // total DP epsilon allowed, in millionths (0 = no DP ledger)
        uint64 firstRoundEpsilonMicro; // epsilon after one round (accountant, rounded up); <= budget when budget > 0
        uint64 maxSamplesPerUpdate; // cap on one update's sample count (FedAvg weight); 1..MAX_SAMPLES_PER_UPDATE
        uint16 maxAggregatorFaults; // faults that suspend an aggregator (>= 1)
    }

    /// @dev One slot: what the aggregation functions read about the current round. In Aggregating and Revealing,
    ///      `deadline` is the deadline of the commit or reveal window. `samplesHigh` holds the bits of the round's
    ///      total sample count above the 32 kept in the submissions slot (written only when the low part carries).
    struct RoundState {
        uint32 round;
        Phase phase;
        uint64 deadline;
        uint32 commits;
        uint32 reveals;
        uint32 samplesHigh;
    }

    /// @dev One slot, the only shared slot a submission reads and writes: a running hash over the round's
    ///      submissions binds the aggregator's inputs. `openRound` is the current round while its phase is Open and
    ///      zero otherwise, and always zero under secure aggregation (kept in step with RoundState by _openRound,
    ///      by every caller of _closeForAggregation and by cancel), so submitUpdate and submitUpdateBatch check
    ///      phase and round without reading RoundState. `samplesLow` is the low 32 bits of the round's total
    ///      sample count; the high bits are RoundState.samplesHigh. The total stays below 2^64: every update claims
    ///      at most MAX_SAMPLES_PER_UPDATE and `count` is a uint32.
    struct Submissions {
        bytes20 inputsHash;
        uint32 openRound;
        uint32 count;
        uint32 samplesLow;
    }

    /// @dev One slot per device. `lastRound` is the last round the device submitted to (0 = none); `setupRound`
    ///      and `unmaskRound` the last rounds it submitted a secure-aggregation setup and unmask shares to;
    ///      `hasKey` whether it registered an encryption key (saves reading the key directory in `submitSetup`).
    struct DeviceRecord {
        bool approved;
        uint32 lastRound;
        uint32 approvedInRound;
        uint32 setupRound;
        uint32 unmaskRound;
        bool hasKey;
    }

    /// @dev One slot per secure-aggregation round: the setups recorded, whether the round's first masked update
    ///      (after the setup window, which froze the set) announced the frozen set (SetupSetFrozen), and the unmask
    ///      shares recorded.
    struct SecAggRound {
        uint32 setups;
        bool frozen;
        uint32 unmaskShares;
    }

    // Bit offsets in the words of Submissions and DeviceRecord (Solidity's packing: first member lowest), for the
    // submission hot path that reads and writes them whole.
    uint256 private constant _SUBS_OPEN_ROUND = 160;
    uint256 private constant _SUBS_COUNT = 192;
    uint256 private constant _SUBS_SAMPLES_LOW = 224;
    uint256 private constant _DEVICE_LAST_ROUND = 8;

    /// @dev One slot: the differential-privacy ledger (epsilon in millionths). `spent` is the epsilon charged so far
    ///      (an over-estimate after a failed round), `increment` the bound on the next round's increment (the last
    ///      one measured between two agreed results; firstRoundEpsilonMicro before any), `agreed` the cumulative
    ///      epsilon of the last agreed result. `spent == agreed` while no failed round was charged since then.
    struct PrivacyLedger {
        uint64 spent;
        uint64 increment;
        uint64 agreed;
    }

    /// @dev Two slots per aggregator. Only the latest commitment is kept: committing for a later round overwrites
    ///      it, after which a reveal for the older round fails with NoCommitment. `faults` counts faults since the
    ///      aggregator was last granted the role; `suspended` is set when they reach maxAggregatorFaults.
    struct AggregatorRecord {
        uint32 committedRound;
        bool revealed;
        uint32 faults;
        bool suspended;
        bytes32 commitment;
    }

    /// @dev A reveal of the current round, kept until finalisation checks it against the final result. Revealers
    ///      of the current round all used the round's inputs hash, so model and accepted count make their key.
    struct RevealEntry {
        address aggregator;
        uint32 acceptedUpdates;
        uint64 epsilonMicro;
        bytes32 modelDigest;
    }

    /// @dev A revealed result (memory only).
    struct Result {
        bytes20 inputsHash;
        bytes32 modelDigest;
        bytes32 reportDigest;
        uint32 acceptedUpdates;
        uint64 epsilonMicro;
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
    /// @notice Whether devices submit through the secure-aggregation messages (setup, masked update, unmask shares).
    bool public immutable secureAggregation;
    /// @notice Total differential-privacy epsilon the task may spend, in millionths (0 = no DP ledger).
    uint64 public immutable epsilonBudgetMicro;
    // The EIP-712 domain separator at deployment, and the chain id it was built for (rebuilt after a fork).
    bytes32 private immutable _cachedDomainSeparator;
    uint256 private immutable _cachedChainId;
    /// @notice Epsilon after one round, in millionths (the deployer's accountant, rounded up); 0 without a ledger.
    uint64 public immutable firstRoundEpsilonMicro;
    // Largest sample count (FedAvg weight) one update may claim, and the faults (dissenting or withheld reveals)
    // that suspend an aggregator: read with `limits()` (one getter keeps submitUpdate's dispatch path as it was).
    uint64 private immutable maxSamplesPerUpdate;
    uint16 private immutable maxAggregatorFaults;

    RoundState private _round;
    Submissions private _subs;
    mapping(address device => DeviceRecord) private _devices;

    /// @notice Digest of the current global model (the initial one until the first aggregate).
    bytes32 public globalModelDigest;
    /// @notice Number of currently approved devices.
    uint32 public deviceCount;
    /// @notice n: current holders of AGGREGATOR_ROLE that are not suspended (a round uses its snapshot, see
    ///         aggregationState).
    uint32 public aggregatorCount;
    /// @notice Rounds that ended without agreement; each one adds a round to the task.
    uint32 public failedRounds;
    // n of the current round: aggregatorCount when it opened (same slot as the counters above).
    uint32 private _roundAggregators;
    /// @notice Digest of the aggregate produced by each round (zero for a failed round).
    mapping(uint32 round => bytes32 digest) public roundModelDigest;
    /// @notice The result key `keccak256(abi.encode(inputsHash, modelDigest, acceptedUpdates, epsilonMicro))`
    ///         finalised for each round (zero until finalised, and for a failed round).
    mapping(uint32 round => bytes32 key) public finalResultKey;
    /// @notice Cumulative epsilon (millionths) charged after each round, with a DP ledger: for a finalised round its
    ///         agreed epsilon (or an earlier failed round's conservative charge, if higher), for a failed round the
    ///         conservative charge (zero without a ledger, and until the round ends).
    mapping(uint32 round => uint64 epsilonMicro) public roundEpsilonMicro;

    mapping(address aggregator => AggregatorRecord) private _aggregators;
    mapping(uint32 round => mapping(bytes32 key => uint32 votes)) private _votes;
    // Reveals of the current round, indexed by the round's reveal count; slots are reused round after round.
    RevealEntry[MAX_AGGREGATORS] private _reveals;
    // Committers of the current round, indexed by the round's commit count; slots are reused round after round.
    address[MAX_AGGREGATORS] private _committers;

    PrivacyLedger private _ledger;
    mapping(address account => bytes32 key) private _encryptionKeys;
    mapping(uint32 round => SecAggRound) private _secAgg;
    mapping(uint32 round => mapping(address device => bytes32 digest)) private _setups;
    mapping(uint32 round => mapping(address device => bytes32 digest)) private _unmaskShares;

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
    error NotParticipant(address account);
    error ZeroKey();
    error KeyLocked(address device, uint32 round);
    error NoEncryptionKey(address device);
    error SecureAggregationRequired();
    error SecureAggregationDisabled();
    /// @notice The round's setup window closed at `setupDeadline`: its setup set is frozen.
    error SetupWindowClosed(uint32 round, uint64 setupDeadline);
    /// @notice Masked updates of the round are accepted from `setupDeadline` on, once its setup set is frozen.
    error SetupWindowOpen(uint32 round, uint64 setupDeadline);
    error SetupAlreadySubmitted(address device, uint32 round);
    error NoSetup(address device, uint32 round);
    error SetupCountMismatch(uint32 expected, uint32 given);
    error NoUpdateSubmitted(address device, uint32 round);
    error UnmaskSharesAlreadySubmitted(address device, uint32 round);
    error FirstRoundOverBudget(uint64 firstRoundEpsilonMicro, uint64 budgetMicro);
    error EpsilonTooLow(uint64 given, uint64 minimum);
    /// @notice The epsilon is above the ledger's bound (last agreed + the increment bound, or the budget).
    error EpsilonTooHigh(uint64 given, uint64 maximum);
    /// @notice k and n must satisfy n / 2 < k <= n (at start; a grant while running may not make n >= 2k).
    error ThresholdOutOfRange(uint16 threshold, uint32 aggregators);
    /// @notice The aggregator is suspended (too many faults) until the admin revokes and grants its role again.
    error AggregatorIsSuspended(address aggregator);
    /// @notice Relayed batches are refused under secure aggregation (see the contract's notes).
    error BatchesNeedPlainUpdates();
    /// @notice A batch must carry at least one entry.
    error EmptyBatch();
    /// @notice A batch's total sample count must lie between its entry count (each entry claims at least one) and
    ///         entries * maxSamplesPerUpdate.
    error BatchSamplesOutOfRange(uint64 given, uint64 minimum, uint64 maximum);
    /// @notice `submitResult` needs a task with exactly one aggregator and threshold 1.
    error NotSingleAggregator(uint32 aggregators, uint16 threshold);

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
    /// @notice The task's privacy configuration, emitted once at deployment.
    event PrivacyConfigured(bool secureAggregation, uint64 epsilonBudgetMicro, uint64 firstRoundEpsilonMicro);
    /// @notice The task's per-update sample cap and fault limit, emitted once at deployment.
    event LimitsConfigured(uint64 maxSamplesPerUpdate, uint16 maxAggregatorFaults);
    event DeviceJoinRequested(address indexed device);
    event DeviceApproved(address indexed device, uint32 indexed round);
    event DeviceRemoved(address indexed device, address indexed by);
    event RoundOpened(uint32 indexed round, bytes32 globalModelDigest, uint64 deadline);
    event UpdateSubmitted(uint32 indexed round, address indexed device, bytes32 updateDigest, uint64 numSamples);
    /// @notice A relayer recorded a batch of signed device updates: `batchDigest` is the sha256 digest of the batch
    ///         file's CIDv0 on IPFS, `entriesRoot` the Merkle root of its `entries` entries, `totalSamples` the sum
    ///         of their sample counts. The entries count towards maxUpdates.
    event UpdateBatchSubmitted(
        uint32 indexed round,
        address indexed relayer,
        bytes32 batchDigest,
        bytes32 entriesRoot,
        uint32 entries,
        uint64 totalSamples
    );
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
        uint32 acceptedUpdates,
        uint64 epsilonMicro
    );
    /// @notice The round's result is final: aggregatorThreshold reveals agreed; `aggregator` made the last of them.
    event AggregateCommitted(
        uint32 indexed round,
        address indexed aggregator,
        bytes32 modelDigest,
        bytes32 reportDigest,
        bytes20 inputsHash,
        uint32 acceptedUpdates,
        uint64 epsilonMicro
    );
    /// @notice An aggregator revealed a result that disagrees with the round's final one.
    event AggregatorFault(
        uint32 indexed round,
        address indexed aggregator,
        bytes32 revealedModelDigest,
        bytes32 finalModelDigest,
        uint32 faults
    );
    /// @notice The aggregator reached maxAggregatorFaults faults: it can neither commit nor reveal, and no longer
    ///         counts in n from the next round. The admin revokes its role (and may grant it again: reinstatement,
    ///         with its fault count reset) or grants the role to a replacement.
    event AggregatorSuspended(address indexed aggregator, uint32 faults);
    /// @notice The round ended without agreement; the next round starts from the unchanged global model.
    event AggregationFailed(uint32 indexed round, uint32 commits, uint32 reveals);
    event TaskFinished(bytes32 finalModelDigest, uint32 rounds);
    event TaskCancelled(address indexed by, uint32 round);
    /// @notice `account` (an approved device or an aggregator) published or rotated its X25519 public key.
    event EncryptionKeySet(address indexed account, bytes32 key);
    /// @notice A device announced its secure-aggregation setup for the round; `index` is its 0-based position in
    ///         the round's setup set (the set a masked update is masked against is the first `setupCount` setups).
    event SetupSubmitted(uint32 indexed round, address indexed device, bytes32 setupDigest, uint32 index);
    /// @notice The round's setup window closed with `setups` setups, the set every masked update of the round is
    ///         masked against (emitted by the round's first masked update).
    event SetupSetFrozen(uint32 indexed round, uint32 setups);
    /// @notice A device whose masked update is in the round published its unmask shares.
    event UnmaskSharesSubmitted(uint32 indexed round, address indexed device, bytes32 revealDigest);
    /// @notice The DP ledger charged the round: `spentMicro` is the cumulative epsilon charged after it,
    ///         `incrementMicro` the bound on the next round's increment.
    event EpsilonSpent(uint32 indexed round, uint64 spentMicro, uint64 incrementMicro);
    /// @notice The next round could exceed the DP budget: the task finished after `round` (TaskFinished follows).
    event PrivacyBudgetExhausted(uint32 round, uint64 spentMicro, uint64 budgetMicro);

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
        if (config.maxSamplesPerUpdate == 0 || config.maxSamplesPerUpdate > MAX_SAMPLES_PER_UPDATE) {
            revert InvalidConfig("maxSamplesPerUpdate");
        }
        if (config.maxAggregatorFaults == 0) revert InvalidConfig("maxAggregatorFaults is 0");
        if (config.epsilonBudgetMicro != 0) {
            if (config.firstRoundEpsilonMicro == 0) revert InvalidConfig("firstRoundEpsilonMicro is 0");
            if (config.firstRoundEpsilonMicro > config.epsilonBudgetMicro) {
                revert FirstRoundOverBudget(config.firstRoundEpsilonMicro, config.epsilonBudgetMicro);
            }
            // the bound on round 1's increment until a measured one replaces it
            _ledger.increment = config.firstRoundEpsilonMicro;
        }
        modelSpecDigest = config.modelSpecDigest;
        initialModelDigest = config.initialModelDigest;
        numRounds = config.numRounds;
        minUpdates = config.minUpdates;
        maxUpdates = config.maxUpdates;
        roundDuration = config.roundDuration;
        strategyId = config.strategyId;
        aggregatorThreshold = config.aggregatorThreshold;
        aggregationDuration = config.aggregationDuration;
        secureAggregation = config.secureAggregation;
        epsilonBudgetMicro = config.epsilonBudgetMicro;
        firstRoundEpsilonMicro = config.epsilonBudgetMicro == 0 ? 0 : config.firstRoundEpsilonMicro;
        maxSamplesPerUpdate = config.maxSamplesPerUpdate;
        maxAggregatorFaults = config.maxAggregatorFaults;
        globalModelDigest = config.initialModelDigest;
        _cachedChainId = block.chainid;
        _cachedDomainSeparator = _buildDomainSeparator();
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
        emit PrivacyConfigured(config.secureAggregation, config.epsilonBudgetMicro, firstRoundEpsilonMicro);
        emit LimitsConfigured(config.maxSamplesPerUpdate, config.maxAggregatorFaults);
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
    /// @dev Reverts ThresholdOutOfRange unless n / 2 < k <= n (n = aggregatorCount, k = aggregatorThreshold): k <= n
    ///      so that a round can finish, 2k > n so that no minority finalises and two results never both reach k.
    ///      Reverts FirstRoundOverBudget if round 1 could exceed the DP budget (the constructor already refuses such
    ///      a configuration; the check is the same one every later round passes before it opens).
    function start() external onlyRole(DEFAULT_ADMIN_ROLE) {
        Phase phase = _round.phase;
        if (phase != Phase.Registering) revert WrongPhase(Phase.Registering, phase);
        uint32 n = aggregatorCount;
        if (n < aggregatorThreshold || n >= 2 * uint32(aggregatorThreshold)) {
            revert ThresholdOutOfRange(aggregatorThreshold, n);
        }
        if (epsilonBudgetMicro != 0 && _overBudget(_ledger)) {
            revert FirstRoundOverBudget(firstRoundEpsilonMicro, epsilonBudgetMicro);
        }
        _openRound(1, initialModelDigest);
    }

    /// @notice Cancel the task; no further rounds open. Works in every phase but Finished and Cancelled, so the
    ///         admin can end a task whose aggregators keep failing to agree.
    function cancel() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _requireNotOver();
        _round.phase = Phase.Cancelled;
        _subs.openRound = 0;
        emit TaskCancelled(msg.sender, _round.round);
    }

    // ---------------------------------------------------------------- key directory

    /// @notice Publish (or rotate) the caller's X25519 public key, which peers use to encrypt what they send it
    ///         off-chain. Open to approved devices and to holders of AGGREGATOR_ROLE until the task is over. A device
    ///         cannot rotate its key while a round it submitted a secure-aggregation setup to is still in progress
    ///         (its peers encrypted their key shares to the old key).
    /// @param key The 32-byte X25519 public key; zero is refused.
    /// @dev Reverts: ZeroKey, TaskOver, NotParticipant, KeyLocked (a device with a setup in the current round).
    function setEncryptionKey(bytes32 key) external {
        if (key == bytes32(0)) revert ZeroKey();
        _requireNotOver();
        DeviceRecord storage record = _devices[msg.sender];
        if (record.approved) {
            // no setup exists in Registering (round 0); a setup in the current round locks the key until it ends
            uint32 round = _round.round;
            if (record.setupRound == round && round != 0) revert KeyLocked(msg.sender, round);
            if (!record.hasKey) record.hasKey = true;
        } else if (!hasRole(AGGREGATOR_ROLE, msg.sender)) {
            revert NotParticipant(msg.sender);
        }
        _encryptionKeys[msg.sender] = key;
        emit EncryptionKeySet(msg.sender, key);
    }

    // ---------------------------------------------------------------- rounds

    /// @notice Record the caller's update for the open round (tasks without secure aggregation).
    /// @param round The round the update was trained for (guards against a delayed transaction landing later).
    /// @param updateDigest sha256 digest of the update's CIDv0 on IPFS.
    /// @param numSamples Number of samples the update was trained on (its FedAvg weight).
    /// @dev Reverts: SecureAggregationRequired (use submitMaskedUpdate), WrongPhase, WrongRound, EmptyDigest,
    ///      ZeroSamples, TooManySamples, NotApprovedDevice, AlreadySubmitted.
    ///      The hot path of every round, hence written for gas: it reads and writes the accumulator and the device
    ///      record as whole words (their layouts are the structs' Solidity layouts, see _SUBS_* and _DEVICE_*) and
    ///      touches no other slot. One combined check covers every condition; when it fails, _revertSubmit
    ///      reverts with the first failing one in the order above (under secure aggregation `openRound` stays
    ///      zero, so the check fails and SecureAggregationRequired comes first). Checks, then effects; no
    ///      interaction.
    function submitUpdate(uint32 round, bytes32 updateDigest, uint64 numSamples) external {
        uint256 cap = maxSamplesPerUpdate;
        uint256 word;
        uint256 device;
        DeviceRecord storage record = _devices[msg.sender];
        {
            bool valid;
            assembly ("memory-safe") {
                word := sload(_subs.slot)
                device := sload(record.slot)
                valid := and(
                    and(
                        // round is the open round (openRound is zero unless the phase is Open)
                        and(eq(and(shr(_SUBS_OPEN_ROUND, word), 0xffffffff), round), gt(round, 0)),
                        // a digest, and 1 <= numSamples <= cap (cap <= MAX_SAMPLES_PER_UPDATE = type(uint32).max)
                        and(gt(updateDigest, 0), lt(sub(numSamples, 1), cap))
                    ),
                    // an approved device (lowest byte) that has not submitted to this round
                    and(and(device, 0xff), iszero(eq(and(shr(_DEVICE_LAST_ROUND, device), 0xffffffff), round)))
                )
            }
            if (!valid) _revertSubmit(round, word, updateDigest, numSamples, device);
        }

        uint256 maximum = maxUpdates;
        bytes32 topic = UpdateSubmitted.selector;
        uint256 next;
        // not "memory-safe": the fold borrows the free memory pointer's word (restored before Solidity code runs)
        assembly {
            // record.lastRound = round
            sstore(
                record.slot,
                or(and(device, not(shl(_DEVICE_LAST_ROUND, 0xffffffff))), shl(_DEVICE_LAST_ROUND, round))
            )
            // inputsHash = bytes20(keccak256(abi.encodePacked(inputsHash, msg.sender, updateDigest, numSamples)))
            // The 80 bytes are packed at 0x00 (scratch space and the free memory pointer's word; the bytes written
            // past 0x60 are zero, so the zero slot stays zero): no memory expansion.
            let fmp := mload(0x40)
            mstore(0, shl(96, word))
            mstore(20, shl(96, caller()))
            mstore(40, updateDigest)
            mstore(72, shl(192, numSamples))
            let folded := shr(96, keccak256(0, 80))
            // count + 1 (no carry out: an open round's count is below maxUpdates <= 2^32 - 1) and samplesLow +
            // numSamples modulo 2^32 (numSamples <= cap < 2^32; a carry leaves the word and goes to _carry)
            next := add(shl(160, shr(160, word)), or(shl(_SUBS_COUNT, 1), shl(_SUBS_SAMPLES_LOW, numSamples)))
            let open := lt(and(shr(_SUBS_COUNT, next), 0xffffffff), maximum)
            let carried := lt(shr(_SUBS_SAMPLES_LOW, next), numSamples)
            // maxUpdates reached: openRound (equal to round) is cleared and the round closes (_carry)
            next := or(xor(next, shl(_SUBS_OPEN_ROUND, mul(round, iszero(open)))), folded)
            sstore(_subs.slot, next)
            // emit UpdateSubmitted(round, msg.sender, updateDigest, numSamples)
            mstore(0, updateDigest)
            mstore(32, numSamples)
            log3(0, 64, topic, round, caller())
            // The common case ends here: nothing is left to do and nothing is returned, so the call ends at once
            // (STOP is a function's normal successful end) without unwinding the stack.
            if and(open, iszero(carried)) { stop() }
            mstore(0x40, fmp)
        }
        _carry(round, word, next, numSamples);
    }

    /// @notice Announce the caller's secure-aggregation setup for the open round: the digest of the CIDv0 of its
    ///         public mask keys and of its key shares encrypted to its peers' registered keys. Accepted only in the
    ///         round's setup window (before `setupDeadline`), whose end freezes the setup set.
    /// @param round The open round.
    /// @param setupDigest sha256 digest of the setup's CIDv0 on IPFS.
    /// @dev Reverts: SecureAggregationDisabled, WrongPhase, WrongRound, EmptyDigest, NotApprovedDevice,
    ///      NoEncryptionKey, SetupAlreadySubmitted, SetupWindowClosed.
    function submitSetup(uint32 round, bytes32 setupDigest) external {
        if (!secureAggregation) revert SecureAggregationDisabled();
        RoundState memory state = _round;
        if (state.phase != Phase.Open) revert WrongPhase(Phase.Open, state.phase);
        if (round != state.round) revert WrongRound(state.round, round);
        if (setupDigest == bytes32(0)) revert EmptyDigest();
        DeviceRecord storage record = _devices[msg.sender];
        if (!record.approved) revert NotApprovedDevice(msg.sender);
        // hasKey saves reading the key directory; a key registered before the device was approved counts too
        if (!record.hasKey && _encryptionKeys[msg.sender] == bytes32(0)) revert NoEncryptionKey(msg.sender);
        if (record.setupRound == round) revert SetupAlreadySubmitted(msg.sender, round);
        uint64 setupEnd = _setupDeadline(state.deadline);
        if (block.timestamp >= setupEnd) revert SetupWindowClosed(round, setupEnd);

        record.setupRound = round;
        _setups[round][msg.sender] = setupDigest;
        SecAggRound storage secAgg = _secAgg[round];
        uint32 index = secAgg.setups;
        secAgg.setups = index + 1;
        emit SetupSubmitted(round, msg.sender, setupDigest, index);
    }

    /// @notice Record the caller's masked update for the open round (tasks with secure aggregation). Accepted
    ///         only once the round's setup window has closed (from `setupDeadline` on), from a device in the frozen
    ///         setup set, masked against exactly that set: `setupCount` must equal the frozen count. The round's
    ///         first masked update announces the frozen set (SetupSetFrozen). Otherwise as submitUpdate: the update
    ///         joins the round's inputs hash, and maxUpdates updates close the round.
    /// @param round The round the update was trained for.
    /// @param updateDigest sha256 digest of the masked update's CIDv0 on IPFS.
    /// @param numSamples Number of samples the update was trained on (its FedAvg weight).
    /// @param setupCount The number of setups the update was masked against (`setupCount(round)` once frozen).
    /// @dev Reverts: SecureAggregationDisabled, the reverts of submitUpdate, SetupWindowOpen (wait for
    ///      `setupDeadline`), NoSetup, SetupCountMismatch (the update was masked against another set).
    function submitMaskedUpdate(uint32 round, bytes32 updateDigest, uint64 numSamples, uint32 setupCount) external {
        if (!secureAggregation) revert SecureAggregationDisabled();
        _submitMasked(round, updateDigest, numSamples, setupCount);
    }

    /// @notice Record a relayed batch of signed device updates for the open round, in one transaction whatever the
    ///         number of devices. The batch file (canonical JSON on IPFS) lists entries (device, updateDigest,
    ///         numSamples, EIP-712 signature) sorted by device address; the chain records only its digest, the
    ///         Merkle root of its entries, their number and their total sample count, folds them into the round's
    ///         inputs hash and counts the entries towards maxUpdates. Each entry is verified off chain by the
    ///         aggregators (and on chain by anyone with `verifyBatchEntry`); an invalid entry is excluded, not the
    ///         batch. A relayer may record several batches in a round.
    /// @param round The open round (guards against a delayed transaction landing later).
    /// @param batchDigest sha256 digest of the batch file's CIDv0 on IPFS.
    /// @param entriesRoot Merkle root of the batch's entry leaves (see `batchLeaf`), sorted-pair hashing.
    /// @param entries Number of entries in the batch (> 0).
    /// @param totalSamples Sum of the entries' sample counts: between `entries` and `entries * maxSamplesPerUpdate`
    ///        (each entry's own count is checked against maxSamplesPerUpdate off chain by the aggregators).
    /// @dev inputsHash becomes bytes20(keccak256(abi.encodePacked(bytes20 inputsHash, address relayer,
    ///      bytes32 entriesRoot, bytes32 batchDigest, uint32 entries, uint64 totalSamples))) (116 bytes, where a
    ///      direct submission folds 80). Reverts: AccessControlUnauthorizedAccount (no RELAYER_ROLE),
    ///      BatchesNeedPlainUpdates (secure aggregation), WrongPhase, WrongRound, EmptyDigest (zero digest or root),
    ///      EmptyBatch, BatchSamplesOutOfRange.
    function submitUpdateBatch(
        uint32 round,
        bytes32 batchDigest,
        bytes32 entriesRoot,
        uint32 entries,
        uint64 totalSamples
    ) external onlyRole(RELAYER_ROLE) {
        if (secureAggregation) revert BatchesNeedPlainUpdates();
        uint256 word = _openSubmissions(round);
        if (batchDigest == bytes32(0) || entriesRoot == bytes32(0)) revert EmptyDigest();
        if (entries == 0) revert EmptyBatch();
        uint64 maxSamples = uint64(entries) * maxSamplesPerUpdate;
        if (totalSamples < entries || totalSamples > maxSamples) {
            revert BatchSamplesOutOfRange(totalSamples, entries, maxSamples);
        }

        bytes20 folded = bytes20(
            keccak256(
                abi.encodePacked(bytes20(uint160(word)), msg.sender, entriesRoot, batchDigest, entries, totalSamples)
            )
        );
        (uint32 count, bool closes) = _storeSubmissions(word, uint160(folded), entries, totalSamples);
        emit UpdateBatchSubmitted(round, msg.sender, batchDigest, entriesRoot, entries, totalSamples);
        if (closes) _closeForAggregation(round, count, folded);
    }

    /// @notice Publish the caller's unmask shares for a round whose aggregation is under way: the digest of the
    ///         CIDv0 of the shares (encrypted to the aggregators' keys) that let the aggregators remove the masks
    ///         of the round's updates. Only a device whose masked update is in the round; accepted while the round
    ///         is in its commit or reveal window.
    /// @param round The round being aggregated.
    /// @param revealDigest sha256 digest of the unmask shares' CIDv0 on IPFS.
    /// @dev Reverts: SecureAggregationDisabled, WrongRound (not the current round), WrongPhase(Aggregating, phase)
    ///      (still open, finalised into Finished, or cancelled), EmptyDigest, NoUpdateSubmitted,
    ///      UnmaskSharesAlreadySubmitted. A device removed after its update may still submit (its update is in).
    function submitUnmaskShares(uint32 round, bytes32 revealDigest) external {
        if (!secureAggregation) revert SecureAggregationDisabled();
        RoundState memory state = _round;
        if (round != state.round) revert WrongRound(state.round, round);
        if (state.phase != Phase.Aggregating && state.phase != Phase.Revealing) {
            revert WrongPhase(Phase.Aggregating, state.phase);
        }
        if (revealDigest == bytes32(0)) revert EmptyDigest();
        DeviceRecord storage record = _devices[msg.sender];
        if (record.lastRound != round) revert NoUpdateSubmitted(msg.sender, round);
        if (record.unmaskRound == round) revert UnmaskSharesAlreadySubmitted(msg.sender, round);

        record.unmaskRound = round;
        _unmaskShares[round][msg.sender] = revealDigest;
        _secAgg[round].unmaskShares += 1;
        emit UnmaskSharesSubmitted(round, msg.sender, revealDigest);
    }

    /// @notice Close the open round once its deadline has passed: it goes to aggregation if it has at least
    ///         minUpdates updates, otherwise its deadline is extended by roundDuration; a secure-aggregation round
    ///         short of minUpdates fails instead (AggregationFailed; the next round opens with the unchanged model
    ///         and a fresh setup window), since its frozen setup set admits no further device. Anyone may call it.
    /// @param round The open round.
    function closeRound(uint32 round) external {
        RoundState memory state = _round;
        if (state.phase != Phase.Open) revert WrongPhase(Phase.Open, state.phase);
        if (round != state.round) revert WrongRound(state.round, round);
        if (block.timestamp < state.deadline) revert DeadlineNotReached(state.deadline, uint64(block.timestamp));
        Submissions memory subs = _subs;
        if (subs.count >= minUpdates) {
            _subs.openRound = 0;
            _closeForAggregation(round, subs.count, subs.inputsHash);
        } else if (secureAggregation) {
            _failRound(state); // openRound is already zero under secure aggregation
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
    ///        acceptedUpdates, epsilonMicro, salt)` of the result the caller will reveal; `salt` must be secret and
    ///        random.
    function commitResult(uint32 round, bytes32 commitment) external onlyRole(AGGREGATOR_ROLE) {
        RoundState memory state = _round;
        if (state.phase != Phase.Aggregating) revert WrongPhase(Phase.Aggregating, state.phase);
        if (round != state.round) revert WrongRound(state.round, round);
        if (commitment == bytes32(0)) revert EmptyDigest();
        AggregatorRecord storage record = _aggregators[msg.sender];
        if (record.suspended) revert AggregatorIsSuspended(msg.sender);
        uint32 last = record.committedRound;
        if (last == round) revert AlreadyCommitted(msg.sender, round);
        // A commitment to a finalised round that was never revealed is a withheld reveal: a fault, recorded now
        // (the commitment is about to be overwritten); the commit is not made if the fault suspends the caller.
        // Withheld reveals of failed rounds were recorded when their reveal window closed.
        if (!record.revealed && finalResultKey[last] != 0) {
            if (_recordFault(last, msg.sender, record, bytes32(0), roundModelDigest[last])) return;
        }

        record.committedRound = round;
        record.revealed = false;
        record.commitment = commitment;
        // the round's n <= MAX_AGGREGATORS and the window closes at n commitments, so the index is in range
        _committers[state.commits] = msg.sender;
        uint32 commits = state.commits + 1;
        emit ResultCommitted(round, msg.sender, commitment);

        // The round's n (_roundAggregators <= MAX_AGGREGATORS) closes the commit window, so a round never collects
        // more than MAX_AGGREGATORS commitments (nor reveals: one per commitment), whatever the role churn.
        if (commits >= _roundAggregators) {
            _openReveal(state, commits);
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
    /// @param epsilonMicro With a DP ledger, the cumulative epsilon after this round in millionths (the privacy
    ///        accountant's value, rounded up); 0 without one. Part of the agreement.
    /// @param salt The secret salt of the commitment.
    /// @dev Reverts: AggregatorIsSuspended, EmptyDigest, NoCommitment (none for this round, e.g. replaced by a
    ///      commitment for a later round), AlreadyRevealed, CommitmentMismatch; in the reveal window
    ///      RevealWindowClosed (deadline passed), InputsMismatch, TooManyAccepted, and with a DP ledger EpsilonTooLow
    ///      (not above the last agreed epsilon, or below firstRoundEpsilonMicro) or EpsilonTooHigh (above the
    ///      increment bound or the budget): such a result can never be final, so its reveal is refused like one
    ///      with a wrong inputs hash (no vote; the reveal stays withheld, a fault when the window closes);
    ///      WrongPhase(Revealing, phase) for the current round outside its reveal window; RevealWindowClosed for a
    ///      past round that was not finalised (it failed).
    function revealResult(
        uint32 round,
        bytes20 inputsHash,
        bytes32 modelDigest,
        bytes32 reportDigest,
        uint32 acceptedUpdates,
        uint64 epsilonMicro,
        bytes32 salt
    ) external onlyRole(AGGREGATOR_ROLE) {
        if (modelDigest == bytes32(0) || reportDigest == bytes32(0)) revert EmptyDigest();
        _reveal(
            round,
            Result({
                inputsHash: inputsHash,
                modelDigest: modelDigest,
                reportDigest: reportDigest,
                acceptedUpdates: acceptedUpdates,
                epsilonMicro: epsilonMicro
            }),
            salt
        );
    }

    /// @notice Finalise the round being aggregated in one transaction, without commit and reveal: only for a task
    ///         with a single aggregator and threshold 1 (k = n = 1), where commit-reveal protects nothing. The result
    ///         passes the checks a reveal passes and is final at once: AggregateCommitted, then the next round opens
    ///         or the task finishes, exactly as after a reveal that reaches agreement. Accepted while the round is
    ///         in its commit window (Aggregating), like a commitment.
    /// @param round The round being aggregated.
    /// @param inputsHash The running hash of the round's submissions the aggregator used; must equal the chain's.
    /// @param modelDigest Digest of the new global model's CIDv0.
    /// @param reportDigest Digest of the aggregation report's CIDv0.
    /// @param acceptedUpdates How many of the round's updates went into the aggregate.
    /// @param epsilonMicro With a DP ledger, the cumulative epsilon after this round in millionths; 0 without one.
    /// @dev Reverts: AccessControlUnauthorizedAccount, NotSingleAggregator (the round's n != 1 or
    ///      aggregatorThreshold != 1), AggregatorIsSuspended, EmptyDigest, WrongPhase(Aggregating, phase), WrongRound,
    ///      InputsMismatch, TooManyAccepted, EpsilonTooLow, EpsilonTooHigh.
    function submitResult(
        uint32 round,
        bytes20 inputsHash,
        bytes32 modelDigest,
        bytes32 reportDigest,
        uint32 acceptedUpdates,
        uint64 epsilonMicro
    ) external onlyRole(AGGREGATOR_ROLE) {
        RoundState memory state = _round;
        uint32 n = _roundAggregators;
        if (n != 1 || aggregatorThreshold != 1) revert NotSingleAggregator(n, aggregatorThreshold);
        if (_aggregators[msg.sender].suspended) revert AggregatorIsSuspended(msg.sender);
        if (modelDigest == bytes32(0) || reportDigest == bytes32(0)) revert EmptyDigest();
        if (state.phase != Phase.Aggregating) revert WrongPhase(Phase.Aggregating, state.phase);
        if (round != state.round) revert WrongRound(state.round, round);
        Result memory result = Result({
            inputsHash: inputsHash,
            modelDigest: modelDigest,
            reportDigest: reportDigest,
            acceptedUpdates: acceptedUpdates,
            epsilonMicro: epsilonMicro
        });
        _checkResult(result);
        _finalise(state, _resultKey(inputsHash, modelDigest, acceptedUpdates, epsilonMicro), result);
    }

    /// @notice Close the current round's commit or reveal window once its deadline has passed. A commit window with
    ///         at least aggregatorThreshold commitments opens the reveal window; one with fewer fails the round, and
    ///         so does a reveal window (it would have been finalised had aggregatorThreshold reveals agreed). A
    ///         failed round opens the next round with the unchanged global model. Closing a reveal window records a
    ///         fault (AggregatorFault, final digest zero) against every committer of the round that did not reveal.
    ///         Anyone may call it.
    /// @param round The current round.
    function closeAggregationWindow(uint32 round) external {
        RoundState memory state = _round;
        if (round != state.round) revert WrongRound(state.round, round);
        if (state.phase != Phase.Aggregating && state.phase != Phase.Revealing) {
            revert WrongPhase(Phase.Aggregating, state.phase);
        }
        if (block.timestamp < state.deadline) revert DeadlineNotReached(state.deadline, uint64(block.timestamp));
        if (state.phase == Phase.Aggregating && state.commits >= aggregatorThreshold) {
            _openReveal(state, state.commits);
            return;
        }
        if (state.phase == Phase.Revealing) {
            // withheld reveals: committers that let the reveal window pass (at most the round's n <= 32)
            for (uint256 i; i < state.commits; ++i) {
                address committer = _committers[i];
                AggregatorRecord storage record = _aggregators[committer];
                if (!record.revealed) _recordFault(round, committer, record, bytes32(0), bytes32(0));
            }
        }
        _failRound(state);
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
            (uint64(state.samplesHigh) << 32) | subs.samplesLow,
            subs.inputsHash,
            globalModelDigest
        );
    }

    /// @notice This task's EIP-712 domain separator (name "fedchain", version "1", the chain's id, this contract).
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @notice The EIP-712 domain (ERC-5267): name "fedchain", version "1", this chain's id, this contract.
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        )
    {
        return (hex"0f", "fedchain", "1", block.chainid, address(this), bytes32(0), new uint256[](0));
    }

    /// @notice The EIP-712 digest a device signs for an update of this task: keccak256("\x19\x01" ||
    ///         domainSeparator || keccak256(abi.encode(updateTypeHash, round, updateDigest, numSamples))).
    /// @param round The round the update was trained for.
    /// @param updateDigest sha256 digest of the update's CIDv0 on IPFS.
    /// @param numSamples Number of samples the update was trained on.
    function updateHash(uint32 round, bytes32 updateDigest, uint64 numSamples) public view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(UPDATE_TYPEHASH, round, updateDigest, numSamples));
        return keccak256(abi.encodePacked(hex"1901", _domainSeparatorV4(), structHash));
    }

    /// @notice The account that signed an update of this task for `round` (EIP-712, see `updateHash`), or the
    ///         zero address when the signature does not recover (malformed, not 65 bytes, high s). A signature made
    ///         for another task, round, sample count, digest or chain recovers to an unrelated address.
    /// @param round The round the update was signed for.
    /// @param updateDigest sha256 digest of the update's CIDv0 on IPFS.
    /// @param numSamples Number of samples the update claims.
    /// @param signature The 65-byte signature (r, s, v).
    function updateSigner(uint32 round, bytes32 updateDigest, uint64 numSamples, bytes calldata signature)
        public
        view
        returns (address)
    {
        (address signer, ECDSA.RecoverError err,) =
            ECDSA.tryRecoverCalldata(updateHash(round, updateDigest, numSamples), signature);
        return err == ECDSA.RecoverError.NoError ? signer : address(0);
    }

    /// @notice The Merkle leaf of one batch entry: keccak256(bytes.concat(keccak256(abi.encode(device, updateDigest,
    ///         numSamples, keccak256(signature))))) (double hashing, as OpenZeppelin's MerkleProof expects).
    /// @param device The device whose update the entry carries.
    /// @param updateDigest sha256 digest of the update's CIDv0.
    /// @param numSamples The update's sample count.
    /// @param signature The device's EIP-712 signature of the update.
    function batchLeaf(address device, bytes32 updateDigest, uint64 numSamples, bytes calldata signature)
        public
        pure
        returns (bytes32)
    {
        return keccak256(bytes.concat(keccak256(abi.encode(device, updateDigest, numSamples, keccak256(signature)))));
    }

    /// @notice Whether one entry of a relayed batch is valid now: its leaf is in the tree of `entriesRoot` (sorted-pair
    ///         Merkle proof), its signature for `round` of this task recovers to `device`, and `device` is an
    ///         approved device. Whether the device also submitted directly, or appears twice, is for the
    ///         aggregators to check against the round's events.
    /// @param round The round the update was signed for.
    /// @param entriesRoot The batch's Merkle root as recorded by `submitUpdateBatch`.
    /// @param device The entry's device.
    /// @param updateDigest The entry's update digest.
    /// @param numSamples The entry's sample count.
    /// @param signature The entry's signature.
    /// @param proof The sibling hashes from the entry's leaf to the root.
    function verifyBatchEntry(
        uint32 round,
        bytes32 entriesRoot,
        address device,
        bytes32 updateDigest,
        uint64 numSamples,
        bytes calldata signature,
        bytes32[] calldata proof
    ) external view returns (bool) {
        if (device == address(0) || !_devices[device].approved) return false;
        bytes32 leaf = batchLeaf(device, updateDigest, numSamples, signature);
        if (!MerkleProof.verifyCalldata(proof, entriesRoot, leaf)) return false;
        return updateSigner(round, updateDigest, numSamples, signature) == device;
    }

    /// @notice The task's limits (TaskConfig): the largest sample count one update may claim, and the faults after
    ///         which an aggregator is suspended.
    function limits() external view returns (uint64 maxSamples, uint16 maxFaults) {
        return (maxSamplesPerUpdate, maxAggregatorFaults);
    }

    /// @notice The current round's aggregation progress.
    /// @return commits Commitments made for the current round.
    /// @return reveals Reveals made in the current round's reveal window.
    /// @return threshold aggregatorThreshold (k).
    /// @return aggregators The current round's n: aggregatorCount when the round opened.
    function aggregationState()
        external
        view
        returns (uint32 commits, uint32 reveals, uint16 threshold, uint32 aggregators)
    {
        RoundState memory state = _round;
        return (state.commits, state.reveals, aggregatorThreshold, _roundAggregators);
    }

    /// @notice An aggregator's record: its latest commitment, its fault count and whether it is suspended.
    /// @param aggregator The account to look up.
    /// @return committedRound The round of its latest commitment (0 = none).
    /// @return revealed Whether it revealed that commitment.
    /// @return faults Its faults (dissenting or withheld reveals) since it was last granted the role.
    /// @return commitment Its latest commitment.
    /// @return suspended Whether it is suspended (maxAggregatorFaults reached) or was revoked: not counted in n.
    function aggregatorInfo(address aggregator)
        external
        view
        returns (uint32 committedRound, bool revealed, uint32 faults, bytes32 commitment, bool suspended)
    {
        AggregatorRecord memory record = _aggregators[aggregator];
        return (record.committedRound, record.revealed, record.faults, record.commitment, record.suspended);
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

    /// @notice The X25519 public key an account registered (zero if none).
    /// @param account The device or aggregator to look up.
    function encryptionKey(address account) external view returns (bytes32) {
        return _encryptionKeys[account];
    }

    /// @notice The digest of a device's secure-aggregation setup for a round (zero if none).
    /// @param round The round.
    /// @param device The device.
    function setupOf(uint32 round, address device) external view returns (bytes32) {
        return _setups[round][device];
    }

    /// @notice How many setups the round recorded: the set a masked update of the round is masked against (final
    ///         once the round's setup window has closed, see `setupDeadline`).
    /// @param round The round.
    function setupCount(uint32 round) external view returns (uint32) {
        return _secAgg[round].setups;
    }

    /// @notice The setup deadline of the current round while it is open (under secure aggregation): setups are
    ///         accepted before it, masked updates from it on. It is the round's `deadline` (see currentRound) less
    ///         roundDuration / 2; meaningless in other phases (computed from the phase's own deadline).
    function setupDeadline() external view returns (uint64) {
        return _setupDeadline(_round.deadline);
    }

    /// @notice The digest of a device's unmask shares for a round (zero if none).
    /// @param round The round.
    /// @param device The device.
    function unmaskSharesOf(uint32 round, address device) external view returns (bytes32) {
        return _unmaskShares[round][device];
    }

    /// @notice How many devices published unmask shares for the round.
    /// @param round The round.
    function unmaskShareCount(uint32 round) external view returns (uint32) {
        return _secAgg[round].unmaskShares;
    }

    /// @notice The DP ledger, in millionths of epsilon.
    /// @return spent The cumulative epsilon charged so far (an over-estimate after a failed round).
    /// @return increment The bound on the next round's increment; the next round opens only if
    ///         spent + increment <= epsilonBudgetMicro.
    /// @return agreed The cumulative epsilon of the last agreed result (a reveal below it is refused).
    /// @return budget epsilonBudgetMicro.
    function privacyLedger() external view returns (uint64 spent, uint64 increment, uint64 agreed, uint64 budget) {
        PrivacyLedger memory ledger = _ledger;
        return (ledger.spent, ledger.increment, ledger.agreed, epsilonBudgetMicro);
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
    /// @param epsilonMicro The cumulative epsilon after the round, in millionths (0 without a DP ledger).
    /// @param salt A secret random salt.
    function resultCommitment(
        uint32 round,
        address aggregator,
        bytes20 inputsHash,
        bytes32 modelDigest,
        bytes32 reportDigest,
        uint32 acceptedUpdates,
        uint64 epsilonMicro,
        bytes32 salt
    ) public view returns (bytes32) {
        return keccak256(
            abi.encode(
                address(this),
                round,
                aggregator,
                inputsHash,
                modelDigest,
                reportDigest,
                acceptedUpdates,
                epsilonMicro,
                salt
            )
        );
    }

    /// @dev The key reveals agree on: `keccak256(abi.encode(inputsHash, modelDigest, acceptedUpdates, epsilonMicro))`.
    ///      Private to keep the runtime under EIP-170's 24,576 bytes: `finalResultKey` shows it on chain, and
    ///      fedchain.chain.task.result_key mirrors it off chain.
    /// @param inputsHash The inputs hash the result was computed from.
    /// @param modelDigest Digest of the aggregate's CIDv0.
    /// @param acceptedUpdates How many updates went into the aggregate.
    /// @param epsilonMicro The cumulative epsilon after the round, in millionths (0 without a DP ledger).
    function _resultKey(bytes20 inputsHash, bytes32 modelDigest, uint32 acceptedUpdates, uint64 epsilonMicro)
        private
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(inputsHash, modelDigest, acceptedUpdates, epsilonMicro));
    }

    // ---------------------------------------------------------------- internals

    function _domainSeparatorV4() private view returns (bytes32) {
        return block.chainid == _cachedChainId ? _cachedDomainSeparator : _buildDomainSeparator();
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, DOMAIN_NAME_HASH, DOMAIN_VERSION_HASH, block.chainid, address(this))
        );
    }

    /// @dev Keeps aggregatorCount (n) equal to the number of AGGREGATOR_ROLE holders not suspended: at most
    ///      MAX_AGGREGATORS, and once the task has started below 2k (else k aggregators would be a minority, and
    ///      two results could both reach k). A (re-)grant starts with no faults: reinstatement is revoke + grant.
    function _grantRole(bytes32 role, address account) internal override returns (bool granted) {
        granted = super._grantRole(role, account);
        if (granted && role == AGGREGATOR_ROLE) {
            uint32 n = aggregatorCount + 1;
            if (n > MAX_AGGREGATORS) revert TooManyAggregators(MAX_AGGREGATORS);
            if (_round.phase != Phase.Registering && n >= 2 * uint32(aggregatorThreshold)) {
                revert ThresholdOutOfRange(aggregatorThreshold, n);
            }
            aggregatorCount = n;
            AggregatorRecord storage record = _aggregators[account];
            record.suspended = false;
            record.faults = 0;
        }
    }

    /// @dev Keeps aggregatorCount equal to the number of AGGREGATOR_ROLE holders not suspended. A revoked account
    ///      is marked suspended (not counted; a late fault then changes no count). Never refused: a smaller n only
    ///      costs liveness (a round whose n is below k fails), never safety.
    function _revokeRole(bytes32 role, address account) internal override returns (bool revoked) {
        revoked = super._revokeRole(role, account);
        if (revoked && role == AGGREGATOR_ROLE) {
            AggregatorRecord storage record = _aggregators[account];
            if (!record.suspended) --aggregatorCount;
            record.suspended = true;
        }
    }

    function _reveal(uint32 round, Result memory result, bytes32 salt) private {
        AggregatorRecord storage record = _aggregators[msg.sender];
        if (record.suspended) revert AggregatorIsSuspended(msg.sender);
        if (record.committedRound != round || record.commitment == bytes32(0)) revert NoCommitment(msg.sender, round);
        if (record.revealed) revert AlreadyRevealed(msg.sender, round);
        bytes32 expected = resultCommitment(
            round,
            msg.sender,
            result.inputsHash,
            result.modelDigest,
            result.reportDigest,
            result.acceptedUpdates,
            result.epsilonMicro,
            salt
        );
        if (record.commitment != expected) revert CommitmentMismatch(msg.sender, round);

        bytes32 key = _resultKey(result.inputsHash, result.modelDigest, result.acceptedUpdates, result.epsilonMicro);
        RoundState memory state = _round;
        if (round == state.round && state.phase == Phase.Revealing) {
            _revealInWindow(state, record, key, result);
            return;
        }
        bytes32 finalKey = finalResultKey[round];
        if (finalKey != bytes32(0)) {
            // late reveal of a finalised round: accepted so that a dissenting result still records its fault
            record.revealed = true;
            emit ResultRevealed(
                round, msg.sender, result.modelDigest, result.reportDigest, result.acceptedUpdates, result.epsilonMicro
            );
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
        _checkResult(result);

        record.revealed = true;
        uint32 votes = _votes[round][key] + 1;
        emit ResultRevealed(
            round, msg.sender, result.modelDigest, result.reportDigest, result.acceptedUpdates, result.epsilonMicro
        );
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
                epsilonMicro: result.epsilonMicro,
                modelDigest: result.modelDigest
            });
            _round.reveals = state.reveals + 1;
        }
    }

    /// @dev The checks a result of the current round passes before it may vote or be final (revealResult in the
    ///      reveal window, submitResult): the chain's inputs hash, at most the round's update count, and with a DP
    ///      ledger an epsilon that can be the cumulative one.
    function _checkResult(Result memory result) private view {
        Submissions memory subs = _subs;
        if (result.inputsHash != subs.inputsHash) revert InputsMismatch(subs.inputsHash, result.inputsHash);
        if (result.acceptedUpdates > subs.count) revert TooManyAccepted(result.acceptedUpdates, subs.count);
        if (epsilonBudgetMicro != 0) {
            // Every round costs privacy (increment > 0), and after one round epsilon is at least the first round's.
            PrivacyLedger memory ledger = _ledger;
            uint64 minimum = ledger.agreed + 1;
            if (minimum < firstRoundEpsilonMicro) minimum = firstRoundEpsilonMicro;
            if (result.epsilonMicro < minimum) revert EpsilonTooLow(result.epsilonMicro, minimum);
            // Concavity: each round since the last agreed one (the failed ones were charged `increment` each) adds
            // at most `increment`, plus one millionth each for rounding up; never above the budget.
            uint64 maximum = epsilonBudgetMicro;
            unchecked {
                // spent >= agreed, increment >= 1; the sum stays far below 2^256
                uint256 bound =
                    uint256(ledger.spent) + ledger.increment + 1 + (ledger.spent - ledger.agreed) / ledger.increment;
                if (bound < maximum) maximum = uint64(bound);
            }
            if (result.epsilonMicro > maximum) revert EpsilonTooHigh(result.epsilonMicro, maximum);
        }
    }

    function _finalise(RoundState memory state, bytes32 key, Result memory result) private {
        uint32 round = state.round;
        bytes32 modelDigest = result.modelDigest;
        finalResultKey[round] = key;
        roundModelDigest[round] = modelDigest;
        globalModelDigest = modelDigest;
        emit AggregateCommitted(
            round,
            msg.sender,
            modelDigest,
            result.reportDigest,
            result.inputsHash,
            result.acceptedUpdates,
            result.epsilonMicro
        );

        // Earlier revealers of this round (the caller would be entry state.reveals); all used the round's inputs
        // hash, so a different model, accepted count or epsilon is a different key.
        for (uint256 i; i < state.reveals; ++i) {
            RevealEntry memory entry = _reveals[i];
            if (
                entry.modelDigest != modelDigest || entry.acceptedUpdates != result.acceptedUpdates
                    || entry.epsilonMicro != result.epsilonMicro
            ) {
                _recordFault(round, entry.aggregator, _aggregators[entry.aggregator], entry.modelDigest, modelDigest);
            }
        }

        bool exhausted;
        if (epsilonBudgetMicro != 0) exhausted = _chargeAgreed(round, result.epsilonMicro);
        if (uint256(round) >= uint256(numRounds) + failedRounds || exhausted) {
            state.phase = Phase.Finished;
            state.reveals += 1; // the finalising reveal
            _round = state;
            emit TaskFinished(modelDigest, round);
        } else {
            _openRound(round + 1, modelDigest);
        }
    }

    /// @dev Records a fault (a zero revealed digest: a withheld reveal) and suspends the aggregator when its faults
    ///      reach maxAggregatorFaults (a revoked one is already marked suspended). Returns whether it suspended it.
    function _recordFault(
        uint32 round,
        address aggregator,
        AggregatorRecord storage record,
        bytes32 revealedModelDigest,
        bytes32 finalModelDigest
    ) private returns (bool suspended) {
        uint32 faults = record.faults + 1;
        record.faults = faults;
        emit AggregatorFault(round, aggregator, revealedModelDigest, finalModelDigest, faults);
        if (faults >= maxAggregatorFaults && !record.suspended) {
            record.suspended = true;
            --aggregatorCount;
            emit AggregatorSuspended(aggregator, faults);
            return true;
        }
    }

    function _openReveal(RoundState memory state, uint32 commits) private {
        uint64 deadline = uint64(block.timestamp) + aggregationDuration;
        _round = RoundState({
            round: state.round,
            phase: Phase.Revealing,
            deadline: deadline,
            commits: commits,
            reveals: 0,
            samplesHigh: state.samplesHigh
        });
        emit RevealOpened(state.round, deadline, commits);
    }

    function _failRound(RoundState memory state) private {
        ++failedRounds;
        emit AggregationFailed(state.round, state.commits, state.reveals);
        if (epsilonBudgetMicro != 0 && _chargeFailed(state.round)) {
            state.phase = Phase.Finished;
            _round = state;
            emit TaskFinished(globalModelDigest, state.round);
            return;
        }
        _openRound(state.round + 1, globalModelDigest);
    }

    /// @dev DP ledger, finalised round: record the agreed cumulative epsilon (`epsilonMicro` > ledger.agreed, see
    ///      _checkResult). The bound only shrinks: a measured increment replaces it when smaller (one up to a
    ///      millionth larger is rounding, see _checkResult). It is measured only between two agreed results: after
    ///      a failed round `spent` is an over-estimate, and measuring from it could understate the increment, so the
    ///      last measured bound stays (concavity keeps it valid). `spent` never decreases: an agreed value below a
    ///      failed round's conservative charge leaves the charge in place. Returns whether the next round could
    ///      exceed the budget.
    function _chargeAgreed(uint32 round, uint64 epsilonMicro) private returns (bool exhausted) {
        PrivacyLedger memory ledger = _ledger;
        if (ledger.spent == ledger.agreed && epsilonMicro - ledger.agreed < ledger.increment) {
            ledger.increment = epsilonMicro - ledger.agreed;
        }
        if (epsilonMicro > ledger.spent) ledger.spent = epsilonMicro;
        ledger.agreed = epsilonMicro;
        _ledger = ledger;
        roundEpsilonMicro[round] = ledger.spent;
        emit EpsilonSpent(round, ledger.spent, ledger.increment);
        return _exhausted(round, ledger);
    }

    /// @dev DP ledger, failed round: its devices uploaded noised updates, so the round spent privacy although no
    ///      result was agreed; the agreed epsilon is unknown, so charge the bound on one increment (by concavity,
    ///      at least what the round cost). The round opened only with spent + increment <= budget, so this fits.
    ///      Returns whether the next round could exceed the budget.
    function _chargeFailed(uint32 round) private returns (bool exhausted) {
        PrivacyLedger memory ledger = _ledger;
        ledger.spent += ledger.increment;
        _ledger.spent = ledger.spent;
        roundEpsilonMicro[round] = ledger.spent;
        emit EpsilonSpent(round, ledger.spent, ledger.increment);
        return _exhausted(round, ledger);
    }

    /// @dev Whether a round after `round` could exceed the budget; if so, says so (the caller finishes the task).
    function _exhausted(uint32 round, PrivacyLedger memory ledger) private returns (bool) {
        if (!_overBudget(ledger)) return false;
        emit PrivacyBudgetExhausted(round, ledger.spent, epsilonBudgetMicro);
        return true;
    }

    /// @dev Whether one more round (at most `increment` more epsilon) could take the spent epsilon over the budget.
    function _overBudget(PrivacyLedger memory ledger) private view returns (bool) {
        return uint256(ledger.spent) + ledger.increment > epsilonBudgetMicro;
    }

    function _openRound(uint32 round, bytes32 modelDigest) private {
        uint64 deadline = uint64(block.timestamp) + roundDuration;
        _round =
            RoundState({round: round, phase: Phase.Open, deadline: deadline, commits: 0, reveals: 0, samplesHigh: 0});
        // n is fixed for the round when it opens (suspensions and role changes count from the next round)
        _roundAggregators = aggregatorCount;
        // Seeding the accumulator with a non-zero value keeps the first submitter's write cheap.
        // openRound stays zero under secure aggregation: submitUpdate's check then fails (SecureAggregationRequired)
        uint32 openRound = secureAggregation ? 0 : round;
        _subs = Submissions({inputsHash: initialInputsHash(round), openRound: openRound, count: 0, samplesLow: 0});
        emit RoundOpened(round, modelDigest, deadline);
    }

    /// @dev Open -> Aggregating. The caller has already cleared `_subs.openRound` (in the write it makes anyway).
    function _closeForAggregation(uint32 round, uint32 count, bytes20 inputsHash) private {
        // the commit window; commits and reveals are still zero from _openRound
        uint32 samplesHigh = _round.samplesHigh;
        uint64 deadline = uint64(block.timestamp) + aggregationDuration;
        _round = RoundState({
            round: round,
            phase: Phase.Aggregating,
            deadline: deadline,
            commits: 0,
            reveals: 0,
            samplesHigh: samplesHigh
        });
        emit RoundReadyForAggregation(
            round, count, (uint64(samplesHigh) << 32) | _subs.samplesLow, inputsHash
        );
    }

    /// @dev What submitUpdate rarely does after writing the accumulator `next` (from `previous`, adding `samples`):
    ///      carry the round's sample total into RoundState.samplesHigh when its low 32 bits overflowed, and close
    ///      the round when its count reached maxUpdates (openRound is already zero in `next`).
    function _carry(uint32 round, uint256 previous, uint256 next, uint64 samples) private {
        uint64 low = uint64(uint32(previous >> _SUBS_SAMPLES_LOW)) + samples;
        if (low > type(uint32).max) _round.samplesHigh += uint32(low >> 32);
        if (uint32(next >> _SUBS_OPEN_ROUND) == 0) {
            _closeForAggregation(round, uint32(next >> _SUBS_COUNT), bytes20(uint160(next)));
        }
    }

    /// @dev submitUpdate's slow path: a submission that failed the combined check reverts with the first failing
    ///      condition in submitUpdate's documented order.
    function _revertSubmit(uint32 round, uint256 word, bytes32 updateDigest, uint64 numSamples, uint256 device)
        private
        view
    {
        if (secureAggregation) revert SecureAggregationRequired();
        if (round != uint32(word >> _SUBS_OPEN_ROUND) || round == 0) _revertNotOpen(round);
        if (updateDigest == bytes32(0)) revert EmptyDigest();
        if (numSamples == 0) revert ZeroSamples();
        if (numSamples > maxSamplesPerUpdate) revert TooManySamples(numSamples, maxSamplesPerUpdate);
        if (device & 0xff == 0) revert NotApprovedDevice(msg.sender);
        revert AlreadySubmitted(msg.sender, round);
    }

    /// @dev submitMaskedUpdate (secure aggregation, where `openRound` stays zero): the checks of submitUpdate, the
    ///      secure-aggregation checks (the setup window is over, the caller set up, the count is the frozen one),
    ///      then the same effects.
    function _submitMasked(uint32 round, bytes32 updateDigest, uint64 numSamples, uint32 setupCount) private {
        RoundState memory state = _round;
        if (state.phase != Phase.Open) revert WrongPhase(Phase.Open, state.phase);
        if (round != state.round) revert WrongRound(state.round, round);
        if (updateDigest == bytes32(0)) revert EmptyDigest();
        if (numSamples == 0) revert ZeroSamples();
        if (numSamples > maxSamplesPerUpdate) revert TooManySamples(numSamples, maxSamplesPerUpdate);
        DeviceRecord storage record = _devices[msg.sender];
        if (!record.approved) revert NotApprovedDevice(msg.sender);
        if (record.lastRound == round) revert AlreadySubmitted(msg.sender, round);
        _freezeSetups(record, state, setupCount);

        record.lastRound = round;
        uint256 word = _submissionsWord();
        bytes20 folded =
            bytes20(keccak256(abi.encodePacked(bytes20(uint160(word)), msg.sender, updateDigest, numSamples)));
        (uint32 count, bool closes) = _storeSubmissions(word, uint160(folded), 1, numSamples);
        emit UpdateSubmitted(round, msg.sender, updateDigest, numSamples);
        if (closes) _closeForAggregation(round, count, folded);
    }

    /// @dev The accumulator slot as one word (Submissions' layout, see _SUBS_*).
    function _submissionsWord() private view returns (uint256 word) {
        assembly ("memory-safe") {
            word := sload(_subs.slot)
        }
    }

    /// @dev The accumulator word, after checking that `round` is the open round (else the revert the phase and
    ///      round explain).
    function _openSubmissions(uint32 round) private view returns (uint256 word) {
        word = _submissionsWord();
        if (round != uint32(word >> _SUBS_OPEN_ROUND) || round == 0) _revertNotOpen(round);
    }

    /// @dev Writes the accumulator `word` after a submission of `added` updates and `samples` samples whose fold
    ///      gave `folded` (the new inputs hash as a uint160): adds to the count and to the round's total (carrying
    ///      into RoundState.samplesHigh when the low 32 bits overflow) and, when the count reaches maxUpdates,
    ///      clears `openRound` (the caller then closes the round with _closeForAggregation). submitUpdate inlines
    ///      the same arithmetic.
    function _storeSubmissions(uint256 word, uint256 folded, uint32 added, uint64 samples)
        private
        returns (uint32 count, bool closes)
    {
        uint256 maximum = maxUpdates;
        uint256 low;
        assembly ("memory-safe") {
            let total := add(and(shr(_SUBS_COUNT, word), 0xffffffff), added)
            if gt(total, 0xffffffff) {
                // Panic(0x11), as checked arithmetic would: the count of a round cannot pass 2^32 - 1
                mstore(0, shl(224, 0x4e487b71))
                mstore(4, 0x11)
                revert(0, 0x24)
            }
            count := total
            // samples <= (2^32 - 1) * MAX_SAMPLES_PER_UPDATE <= 2^64 - 2^33 + 1, so the sum fits a uint64
            low := add(shr(_SUBS_SAMPLES_LOW, word), samples)
            closes := iszero(lt(total, maximum))
            // openRound is kept (zero under secure aggregation), and cleared when the round closes
            let openBits := and(word, shl(_SUBS_OPEN_ROUND, mul(0xffffffff, iszero(closes))))
            let next := or(or(folded, openBits), shl(_SUBS_COUNT, total))
            sstore(_subs.slot, or(next, shl(_SUBS_SAMPLES_LOW, and(low, 0xffffffff))))
        }
        if (low > type(uint32).max) _round.samplesHigh += uint32(low >> 32);
    }

    /// @dev Reverts a submission to a round that is not the open one, with the error the phase and round explain.
    function _revertNotOpen(uint32 round) private view {
        RoundState memory state = _round;
        if (state.phase != Phase.Open) revert WrongPhase(Phase.Open, state.phase);
        revert WrongRound(state.round, round);
    }

    /// @dev A masked update's secure-aggregation checks; the round's first one announces the frozen setup set.
    function _freezeSetups(DeviceRecord storage record, RoundState memory state, uint32 setupCount) private {
        uint32 round = state.round;
        uint64 setupEnd = _setupDeadline(state.deadline);
        if (block.timestamp < setupEnd) revert SetupWindowOpen(round, setupEnd);
        if (record.setupRound != round) revert NoSetup(msg.sender, round);
        SecAggRound storage secAgg = _secAgg[round];
        SecAggRound memory counts = secAgg;
        if (setupCount != counts.setups) revert SetupCountMismatch(counts.setups, setupCount);
        if (!counts.frozen) {
            secAgg.frozen = true;
            emit SetupSetFrozen(round, counts.setups);
        }
    }

    /// @dev The setup deadline of the open secure round whose deadline is `roundDeadline`: the round deadline less
    ///      roundDuration / 2, i.e. the opening time plus roundDuration - roundDuration / 2 (a secure round's
    ///      deadline is never extended: it stays the opening time plus roundDuration). No underflow: an open
    ///      round's deadline is at least roundDuration.
    function _setupDeadline(uint64 roundDeadline) private view returns (uint64) {
        unchecked {
            return roundDeadline - roundDuration / 2;
        }
    }

    function _requireNotOver() private view {
        Phase phase = _round.phase;
        if (phase == Phase.Finished || phase == Phase.Cancelled) revert TaskOver(phase);
    }
}
