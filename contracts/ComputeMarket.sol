// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

/// @title ComputeMarket
/// @notice A market for spare compute: requesters post training jobs with their payment in escrow, staked workers
///         (for example hospitals lending idle machines) claim units of work, and a worker is paid only for a
///         result that another worker reproduced. Weights, data and plans never touch the chain: they live on IPFS
///         and the chain records the 32-byte sha256 digest of each CIDv0.
/// @dev A job is `numStages` stages of `unitsPerStage` units; unit `u` (global index) belongs to stage
///      `u / unitsPerStage`. Only the units of the job's current stage can be claimed. Each unit is computed by two
///      replicas (claim slots 0 and 1) held by two different workers, and results are sealed so that nobody is
///      paid for a result they copied:
///        - commit: each replica submits `commitment = keccak256(abi.encode(worker, tag))` with
///          `tag = keccak256(abi.encode(jobId, unitIndex, resets, resultDigest))` before its claim's deadline.
///          The commitment is bound to its sender, so a lazy replica cannot reuse the other's;
///        - reveal: once both committed, each reveals its tag within the reveal window (claimDuration). The tag
///          still hides the digest (a hash of the computed weights nobody else can guess);
///        - equal tags: either replica publishes the digest (`publishResult`, which may also reveal its own tag
///          in the same call); the unit is Accepted and both replicas are paid `pricePerUnit`;
///        - different tags: the unit is Disputed and its arbiter is DRAWN, never claimed: `drawArbiter` (anyone,
///          from the block after the dispute) picks a worker from the pool of registered workers with the hash of
///          the dispute's block as the beacon (see "Arbiter draw"). Only the drawn worker may `submitArbitration`,
///          in the clear: it cannot copy a replica's digest, which was never published. If the digest's tag equals
///          one replica's, that replica and the arbiter are paid `pricePerUnit` each, and the other replica is
///          slashed `slashAmount`, split equally between the two (odd wei to the replica); if it equals neither,
///          the unit is Reset: it opens again for fresh replication, nobody is paid or slashed, and none of the
///          three may ever claim it again;
///        - a reveal window that passes without acceptance or dispute resets the unit too (`expireReveal`):
///          each replica that kept its tag (or, both tags revealed and equal, the agreed digest) back is excluded
///          from the unit and forfeits `slashAmount`, as much as a wrong result costs, credited to the replica
///          that did reveal (else to the job's escrow, refunded to the requester).
///      Workers keep their result off IPFS until its digest is published, so the content is not there to find
///      either.
///      Once every unit of the current stage is Accepted, the job's coordinator merges the accepted results and
///      commits the stage's checkpoint; the last stage's checkpoint is the job's final model.
///
///      Arbiter draw. Every registered worker has a fixed place in `workerPool` (append-only). At the dispute the
///      contract records the dispute's block `drawBlock` and the pool's size; `drawArbiter` seeds
///      `keccak256(blockhash(drawBlock), jobId, unitIndex, resets)` and tries up to ARBITER_DRAW_TRIES pool places
///      derived from it, taking the first worker that is eligible: not a replica of the unit, not excluded from it,
///      holding at least minStake continuously since a block <= drawBlock (`activeSince`; stake added after the
///      beacon is known does not count), and with stake for one more open claim. Conditioned on success the choice
///      is uniform among the eligible workers. If no try is eligible, or blockhash(drawBlock) left the 256-block
///      window, the draw is scheduled again from the current block. A drawn arbiter that does not submit before
///      its deadline forfeits `expiryForfeit`, is excluded from the unit and a new draw is scheduled. A dispute
///      that is still unresolved at `disputeDeadline` (DISPUTE_WINDOW claim durations after the dispute) is
///      closed by `expireDispute`: both replicas are released unslashed and excluded from the unit, which opens
///      again.
///      Trust assumption of the draw: the arbiter is honest with probability about the honest share of eligible
///      pool places. An attacker's chance grows with the number of staked accounts it keeps in the pool (Sybil
///      stake: minStake per account, locked), and the proposer of `drawBlock` can bias the beacon (by withholding
///      its block, at the cost of its block reward, or by ordering the disputing reveal into a block it builds).
///      Eligibility is read when `drawArbiter` runs, so whoever calls it chooses the moment within the dispute
///      (honest replicas call it at once); it can only make an attacker's own places eligible or not, never an
///      honest worker's. The contract cannot tell a colluding arbiter from an honest one: with a dishonest arbiter
///      drawn, a wrong result can be accepted and the honest replica slashed.
///
///      Money. The requester escrows `numStages * unitsPerStage * pricePerUnit * ESCROW_FACTOR` at posting. A unit
///      pays out exactly `2 * pricePerUnit` when it is Accepted (whether by agreement or by arbitration) and nothing
///      otherwise, so the escrow always covers every payment; what is left goes back to the requester by `refund`.
///      Forfeits credited to a job add to its escrow (and so to the refund). Payments, slashes, forfeits and
///      refunds are credited to withdrawable balances (pull payments, `withdraw`); only `withdraw` and
///      `withdrawStake` send ether, both after their state changes and behind a reentrancy guard.
///      At all times `address(this).balance == totalStaked + totalEscrow + totalOwed`.
///
///      Claims and stake. A claim is open from `claimUnit` (or the draw, for an arbiter) until its unit is Accepted
///      or Reset, or until it is closed: a claim whose deadline passed without a commitment (replica) or result
///      (arbiter) is closed when another worker takes the slot, or by `expireClaim`; its worker is excluded from
///      the unit and, in an Open job, forfeits `expiryForfeit` (to the other replica if that one committed, else to
///      the job). A new claim needs `stake >= minStake * (openClaims + 1)`, and `slashAmount <= minStake`, so every
///      open claim is backed by a full slash. A committed result keeps its worker's stake locked
///      (`withdrawStake` needs no open claim) until it is verified, so a wrong result cannot escape its slash; but
///      a commitment whose partner slot stays uncommitted is released (unpenalised) one claimDuration after its own
///      claim's deadline, so an honest worker's stake is locked for a bounded time whatever other accounts do.
///
///      Cancellation. A cancelled job takes no new claim (nor a draw), but claims already made may still
///      commit, reveal and publish until their deadlines and are paid if their unit is Accepted. The requester's
///      refund of a cancelled job waits until `lastClaimDeadline` (the latest claim deadline or reveal window of
///      the job) has passed: from then on no submission, hence no payment, is possible,
///      so the refund cannot take money a worker is owed. Claims of unresolved units of such a job are then released
///      by `expireClaim`, which unlocks their workers' stake.
///
///      Gas. No function loops over workers, units or stages: claiming, submitting, arbitrating and committing a
///      checkpoint cost the same whatever the size of the job; a draw makes at most ARBITER_DRAW_TRIES tries.
///
///      Known limits. Two colluding accounts holding both replica slots can agree on a wrong result (replication
///      checks honesty, not independence). A digest that became public without accepting the unit (an arbiter's
///      that matched neither replica, or the calldata of a reverted `publishResult`) can be sealed by the next
///      attempt's replicas without computing; as units are deterministic it is then the right result, but they are
///      paid for work they did not do. Two colluding replicas can also delay a unit: each withheld reveal or expired
///      claim bars one of their accounts from it, and the forfeit stays within the coalition. An honest worker that
///      goes offline during a reveal window forfeits like a withholder. Dormant pool places (workers that exited) make tries fail; enough of them delay draws (each
///      failure schedules a new one) until the dispute window closes.
contract ComputeMarket is ReentrancyGuard {
    /// @notice Escrow per unit, in units of pricePerUnit: the worst case of two replicas and an arbiter.
    uint256 public constant ESCROW_FACTOR = 3;
    /// @notice Claim slots of a unit: 0 and 1 are the replicas, 2 the arbiter.
    uint8 public constant ARBITER_SLOT = 2;
    /// @dev `Unit.revealed` once both replicas revealed (bit i: replica i).
    uint8 private constant BOTH_REVEALED = 3;
    /// @notice Pool places a draw tries before it is scheduled again from a later block.
    uint256 public constant ARBITER_DRAW_TRIES = 16;
    /// @notice Claim durations a dispute may take (draws, arbiters that do not answer, arbitration) before
    ///         `expireDispute` may close it.
    uint256 public constant DISPUTE_WINDOW = 4;
    /// @notice expiryForfeit = slashAmount / EXPIRY_FORFEIT_DIVISOR.
    uint256 public constant EXPIRY_FORFEIT_DIVISOR = 4;

    /// @notice Lifecycle of a job. None: no such job.
    enum JobStatus {
        None,
        Open,
        Finished,
        Cancelled
    }

    /// @notice Lifecycle of a unit: Open (replicas being claimed and computed), Revealing (both replicas
    ///         committed: tags being revealed, or equal tags waiting for the digest), Disputed (revealed tags differ:
    ///         an arbiter is drawn), Accepted (final). A Reset unit is Open again.
    enum UnitStatus {
        Open,
        Revealing,
        Disputed,
        Accepted
    }

    /// @notice postJob input.
    struct JobParams {
        bytes32 modelSpecDigest; // model architecture and training description (JSON on IPFS)
        bytes32 initialCheckpointDigest; // weights the first stage starts from (safetensors on IPFS)
        bytes32 datasetDigest; // the data set (or its manifest) the units train on
        bytes32 planDigest; // hyperparameters and the unit plan: what each unit index computes
        address coordinator; // merges each stage's accepted results and commits the stage's checkpoint
        uint32 numStages;
        uint32 unitsPerStage;
        uint256 pricePerUnit; // wei paid to each of the two workers of an Accepted unit
        uint32 claimDuration; // seconds a claim stays valid
    }

    /// @notice A job, as stored and as returned by `job`.
    struct Job {
        address requester;
        JobStatus status;
        uint32 currentStage; // the stage whose units can be claimed (numStages - 1 once Finished)
        uint32 acceptedInStage; // Accepted units of the current stage
        address coordinator;
        uint32 numStages;
        uint32 unitsPerStage;
        uint32 claimDuration;
        uint64 lastClaimDeadline; // latest deadline of any claim or reveal window of the job (0 = never claimed)
        uint256 pricePerUnit;
        uint256 escrowRemaining; // escrow not yet paid out or refunded
        bytes32 modelSpecDigest;
        bytes32 initialCheckpointDigest;
        bytes32 datasetDigest;
        bytes32 planDigest;
        bytes32 latestCheckpointDigest; // the checkpoint the current stage starts from
        bytes32 finalModelDigest; // set when the job Finishes
    }

    /// @dev One claim slot: its holder and deadline (one storage slot).
    struct Claim {
        address worker;
        uint64 deadline;
    }

    /// @dev A unit in storage. `seals[i]` is replica i's commitment (zero = not committed), replaced by its tag
    ///      once revealed (bit i of `revealed`). The status is not stored: it follows from the fields (`_status`).
    struct Unit {
        Claim[3] claims;
        bytes32[2] seals;
        bytes32 accepted; // the accepted result's digest (zero until Accepted)
        uint64 revealDeadline; // zero until both replicas committed
        uint32 resets;
        uint8 revealed;
        uint48 drawBlock; // Disputed: the block whose hash draws the arbiter
        uint32 drawPoolSize; // Disputed: pool places the draw chooses from (the pool's size when it was scheduled)
        uint64 disputeDeadline; // Disputed: after it, expireDispute may close the dispute
    }

    /// @notice A unit as returned by `unit`: slots 0 and 1 are the replicas, slot 2 the arbiter. A slot with a
    ///         zero worker is free. `seals[i]` is replica i's commitment, or its tag once `revealed[i]`.
    struct UnitView {
        UnitStatus status;
        uint32 resets; // times the unit was reset (a three-way disagreement, or a reveal window that passed)
        address[3] workers;
        uint64[3] deadlines;
        bytes32[2] seals;
        bool[2] revealed;
        uint64 revealDeadline; // zero until both replicas committed
        bytes32 acceptedDigest; // zero until Accepted
        uint64 drawBlock; // Disputed: the block whose hash draws the arbiter (zero otherwise)
        uint32 drawPoolSize; // Disputed: pool places the draw chooses from
        uint64 disputeDeadline; // Disputed: when expireDispute may close the dispute (zero otherwise)
    }

    /// @notice A worker, as stored (one storage slot) and as returned by `worker`.
    struct Worker {
        uint96 stake;
        uint32 openClaims; // claims held on units not yet resolved (see the contract's notes)
        uint32 completedUnits; // units the worker was paid for
        uint32 faults; // times the worker was slashed or forfeited stake
        bool registered;
        uint48 activeSince; // block since which stake >= minStake without interruption (0: below minStake)
    }

    /// @notice Least stake a worker needs to register and to claim.
    uint256 public immutable minStake;
    /// @notice What a wrong replica loses per fault, and a replica that withholds its reveal (at most minStake).
    uint256 public immutable slashAmount;
    /// @notice What a claim that expires without a commitment (replica) or result (arbiter) forfeits.
    uint256 public immutable expiryForfeit;

    /// @notice Number of jobs posted; job ids run from 1 to jobCount.
    uint256 public jobCount;
    /// @notice Sum of all workers' stakes.
    uint256 public totalStaked;
    /// @notice Sum of all jobs' escrowRemaining.
    uint256 public totalEscrow;
    /// @notice Sum of all withdrawable balances.
    uint256 public totalOwed;

    mapping(uint256 jobId => Job) private _jobs;
    mapping(uint256 jobId => mapping(uint32 unitIndex => Unit)) private _units;
    mapping(uint256 jobId => mapping(uint32 unitIndex => mapping(address account => bool))) private _excluded;
    mapping(uint256 jobId => mapping(uint32 stage => bytes32 digest)) private _checkpoints;
    mapping(address account => Worker) private _workers;
    mapping(address account => uint256) private _balances;
    /// @dev Every registered worker, in registration order (append-only): the places an arbiter is drawn from.
    address[] private _pool;

    error InvalidConfig(string reason);
    error InvalidJob(string reason);
    error WrongEscrow(uint256 expected, uint256 given);
    error UnknownJob(uint256 jobId);
    error JobNotOpen(uint256 jobId, JobStatus status);
    error NotRequester(uint256 jobId, address account);
    error NotCoordinator(uint256 jobId, address account);
    error UnitOutOfRange(uint256 jobId, uint32 unitIndex, uint32 numUnits);
    error StageNotCurrent(uint256 jobId, uint32 unitIndex, uint32 unitStage, uint32 currentStage);
    error AlreadyRegistered(address account);
    error NotRegistered(address account);
    error StakeTooLow(address account, uint256 stake, uint256 minStake);
    error AmountExceedsStake(address account, uint256 amount, uint256 stake);
    error HasOpenClaims(address account, uint32 openClaims);
    error ZeroAmount();
    error EmptyDigest();
    error UnitNotClaimable(uint256 jobId, uint32 unitIndex, UnitStatus status);
    error AlreadyWorkedOn(uint256 jobId, uint32 unitIndex, address account);
    error NoFreeSlot(uint256 jobId, uint32 unitIndex);
    error NotClaimant(uint256 jobId, uint32 unitIndex, address account);
    error AlreadySubmitted(uint256 jobId, uint32 unitIndex, address account);
    error DeadlinePassed(uint256 jobId, uint32 unitIndex, address account, uint64 deadline);
    error RevealNotOpen(uint256 jobId, uint32 unitIndex);
    error AlreadyRevealed(uint256 jobId, uint32 unitIndex, address account);
    error WrongReveal(uint256 jobId, uint32 unitIndex, address account);
    error ResultsNotAgreed(uint256 jobId, uint32 unitIndex);
    error AlreadyAccepted(uint256 jobId, uint32 unitIndex);
    error UnitNotDisputed(uint256 jobId, uint32 unitIndex, UnitStatus status);
    error NotRevealing(uint256 jobId, uint32 unitIndex, UnitStatus status);
    error RevealNotExpired(uint256 jobId, uint32 unitIndex, uint64 revealDeadline);
    error InvalidSlot(uint8 slot);
    error NoClaim(uint256 jobId, uint32 unitIndex, uint8 slot);
    error ClaimNotExpired(uint256 jobId, uint32 unitIndex, uint8 slot, uint64 deadline);
    error ClaimNotReleasable(uint256 jobId, uint32 unitIndex, uint8 slot);
    error WrongStage(uint256 jobId, uint32 expected, uint32 given);
    error StageIncomplete(uint256 jobId, uint32 stage, uint32 accepted, uint32 required);
    error RefundNotYet(uint256 jobId, JobStatus status, uint64 lastClaimDeadline);
    error NothingToRefund(uint256 jobId);
    error NothingToWithdraw(address account);
    error TransferFailed(address to, uint256 amount);
    error InsufficientStake(address account, uint256 stake, uint256 required);
    error DrawNotReady(uint256 jobId, uint32 unitIndex, uint64 drawBlock);
    error ArbiterAlreadyDrawn(uint256 jobId, uint32 unitIndex, address arbiter);
    error DisputeWindowClosed(uint256 jobId, uint32 unitIndex, uint64 disputeDeadline);
    error DisputeNotExpired(uint256 jobId, uint32 unitIndex, uint64 disputeDeadline);
    error ArbiterPending(uint256 jobId, uint32 unitIndex, address arbiter, uint64 deadline);

    event WorkerRegistered(address indexed worker, uint256 stake);
    event StakeAdded(address indexed worker, uint256 amount, uint256 stake);
    event StakeWithdrawn(address indexed worker, uint256 amount, uint256 stake);
    event JobPosted(
        uint256 indexed jobId,
        address indexed requester,
        address indexed coordinator,
        bytes32 modelSpecDigest,
        bytes32 initialCheckpointDigest,
        bytes32 datasetDigest,
        bytes32 planDigest,
        uint32 numStages,
        uint32 unitsPerStage,
        uint256 pricePerUnit,
        uint32 claimDuration,
        uint256 escrow
    );
    /// @notice `worker` holds claim slot `slot` of the unit until `deadline`.
    event UnitClaimed(
        uint256 indexed jobId, uint32 indexed unitIndex, address indexed worker, uint8 slot, uint64 deadline
    );
    /// @notice A claim expired without a result and was closed (slot taken by another worker, or `expireClaim`).
    event ClaimExpired(uint256 indexed jobId, uint32 indexed unitIndex, address indexed worker, uint8 slot);
    /// @notice A claim of an unresolved unit of a cancelled job was released after the job's last claim deadline.
    event ClaimReleased(uint256 indexed jobId, uint32 indexed unitIndex, address indexed worker, uint8 slot);
    /// @notice A replica sealed its result.
    event ResultCommitted(
        uint256 indexed jobId, uint32 indexed unitIndex, address indexed worker, uint8 slot, bytes32 commitment
    );
    /// @notice Both replicas committed: they may reveal their tags until `revealDeadline`.
    event RevealOpened(uint256 indexed jobId, uint32 indexed unitIndex, uint64 revealDeadline);
    /// @notice A replica revealed the tag of its result.
    event ResultRevealed(
        uint256 indexed jobId, uint32 indexed unitIndex, address indexed worker, uint8 slot, bytes32 tag
    );
    /// @notice The arbiter of a Disputed unit submitted its result.
    event ArbitrationSubmitted(
        uint256 indexed jobId, uint32 indexed unitIndex, address indexed arbiter, bytes32 resultDigest
    );
    /// @notice The reveal window passed without acceptance or dispute: the unit is Open again (`resets`), and
    ///         each replica flagged `excluded` may not claim it again.
    event RevealExpired(
        uint256 indexed jobId,
        uint32 indexed unitIndex,
        uint32 resets,
        address replica0,
        bool excluded0,
        address replica1,
        bool excluded1
    );
    /// @notice The unit's result is final; `paidA` (a replica) and `paidB` (the other replica, or the arbiter) were
    ///         each credited `pricePerUnit`.
    event UnitAccepted(
        uint256 indexed jobId,
        uint32 indexed unitIndex,
        bytes32 resultDigest,
        address paidA,
        address paidB,
        uint256 pricePerUnit
    );
    /// @notice The replicas' revealed tags differ: an arbiter will be drawn; the dispute may be closed without a
    ///         verdict after `disputeDeadline`.
    event UnitDisputed(
        uint256 indexed jobId, uint32 indexed unitIndex, bytes32 tag0, bytes32 tag1, uint64 disputeDeadline
    );
    /// @notice The arbiter of a Disputed unit will be drawn with the hash of block `drawBlock` among the first
    ///         `poolSize` pool places (`drawArbiter`, from the next block on).
    event ArbiterDrawScheduled(uint256 indexed jobId, uint32 indexed unitIndex, uint64 drawBlock, uint32 poolSize);
    /// @notice `arbiter` was drawn for the Disputed unit and must submit its result by `deadline`.
    event ArbiterDrawn(uint256 indexed jobId, uint32 indexed unitIndex, address indexed arbiter, uint64 deadline);
    /// @notice A dispute passed its deadline without a verdict: both replicas were released (unslashed) and
    ///         excluded, and the unit is Open again (`resets`).
    event DisputeExpired(
        uint256 indexed jobId, uint32 indexed unitIndex, uint32 resets, address replica0, address replica1
    );
    /// @notice `worker` forfeited `amount` of its stake (an expired claim, or a reveal it withheld), credited to
    ///         `beneficiary`'s balance, or to the job's escrow if `beneficiary` is zero.
    event StakeForfeited(
        uint256 indexed jobId,
        uint32 indexed unitIndex,
        address indexed worker,
        uint256 amount,
        address beneficiary,
        uint32 faults
    );
    /// @notice `worker` lost `amount` of its stake, credited to the unit's two paid workers.
    event WorkerSlashed(
        uint256 indexed jobId, uint32 indexed unitIndex, address indexed worker, uint256 amount, uint32 faults
    );
    /// @notice The arbiter agreed with neither replica: the unit is Open again and the three may not claim it again.
    event UnitReset(
        uint256 indexed jobId,
        uint32 indexed unitIndex,
        uint32 resets,
        address replica0,
        address replica1,
        address arbiter
    );
    event CheckpointCommitted(uint256 indexed jobId, uint32 indexed stage, bytes32 checkpointDigest);
    event JobFinished(uint256 indexed jobId, bytes32 finalModelDigest);
    /// @notice The job takes no new claim; its refund is possible once `lastClaimDeadline` has passed.
    event JobCancelled(uint256 indexed jobId, uint32 stage, uint64 lastClaimDeadline);
    event Refunded(uint256 indexed jobId, address indexed requester, uint256 amount);
    event Withdrawn(address indexed account, uint256 amount);

    /// @param minStake_ Least stake a worker needs to register and to claim (non-zero).
    /// @param slashAmount_ What a wrong replica (or one that withholds its reveal) loses per fault: non-zero and at
    ///        most minStake, so that the minStake required per open claim covers a full slash.
    constructor(uint256 minStake_, uint256 slashAmount_) {
        if (minStake_ == 0) revert InvalidConfig("minStake is 0");
        if (slashAmount_ == 0) revert InvalidConfig("slashAmount is 0");
        if (slashAmount_ > minStake_) revert InvalidConfig("slashAmount exceeds minStake");
        minStake = minStake_;
        slashAmount = slashAmount_;
        expiryForfeit = slashAmount_ / EXPIRY_FORFEIT_DIVISOR;
    }

    // ---------------------------------------------------------------- workers

    /// @notice Register the caller as a worker with `msg.value` as its stake (at least minStake). The worker takes
    ///         the next place of the pool arbiters are drawn from (`workerPool`).
    function registerWorker() external payable {
        Worker storage w = _workers[msg.sender];
        if (w.registered) revert AlreadyRegistered(msg.sender);
        if (msg.value < minStake) revert StakeTooLow(msg.sender, msg.value, minStake);
        w.registered = true;
        _setStake(w, 0, msg.value);
        totalStaked += msg.value;
        _pool.push(msg.sender);
        emit WorkerRegistered(msg.sender, msg.value);
    }

    /// @notice Add `msg.value` to the caller's stake (for example after a slash, or after an exit).
    function addStake() external payable {
        Worker storage w = _workers[msg.sender];
        if (!w.registered) revert NotRegistered(msg.sender);
        if (msg.value == 0) revert ZeroAmount();
        uint256 before = w.stake;
        uint256 stake = before + msg.value;
        _setStake(w, before, stake);
        totalStaked += msg.value;
        emit StakeAdded(msg.sender, msg.value, stake);
    }

    /// @notice Take `amount` of the caller's stake back. Only without open claims, and the stake left must be 0
    ///         (an exit; the worker stays registered and may `addStake` later) or at least minStake.
    /// @param amount Wei to send to the caller.
    function withdrawStake(uint256 amount) external nonReentrant {
        Worker storage w = _workers[msg.sender];
        if (!w.registered) revert NotRegistered(msg.sender);
        if (amount == 0) revert ZeroAmount();
        if (w.openClaims != 0) revert HasOpenClaims(msg.sender, w.openClaims);
        uint256 stake = w.stake;
        if (amount > stake) revert AmountExceedsStake(msg.sender, amount, stake);
        uint256 remaining = stake - amount;
        if (remaining != 0 && remaining < minStake) revert StakeTooLow(msg.sender, remaining, minStake);
        _setStake(w, stake, remaining);
        totalStaked -= amount;
        emit StakeWithdrawn(msg.sender, amount, remaining);
        _send(msg.sender, amount);
    }

    // ---------------------------------------------------------------- jobs

    /// @notice Post a job and escrow its worst-case cost: `msg.value` must equal
    ///         `escrowRequired(numStages, unitsPerStage, pricePerUnit)` exactly.
    /// @param params The job's digests, coordinator, shape, price and claim duration.
    /// @return jobId The new job's id (ids start at 1).
    function postJob(JobParams calldata params) external payable returns (uint256 jobId) {
        if (
            params.modelSpecDigest == bytes32(0) || params.initialCheckpointDigest == bytes32(0)
                || params.datasetDigest == bytes32(0) || params.planDigest == bytes32(0)
        ) revert EmptyDigest();
        if (params.coordinator == address(0)) revert InvalidJob("coordinator is zero");
        if (params.numStages == 0) revert InvalidJob("numStages is 0");
        if (params.unitsPerStage == 0) revert InvalidJob("unitsPerStage is 0");
        if (uint256(params.numStages) * params.unitsPerStage > type(uint32).max) revert InvalidJob("too many units");
        if (params.pricePerUnit == 0) revert InvalidJob("pricePerUnit is 0");
        if (params.claimDuration == 0) revert InvalidJob("claimDuration is 0");
        uint256 units = uint256(params.numStages) * params.unitsPerStage;
        if (params.pricePerUnit > type(uint256).max / (units * ESCROW_FACTOR)) revert InvalidJob("escrow overflows");
        uint256 escrow = units * params.pricePerUnit * ESCROW_FACTOR;
        if (msg.value != escrow) revert WrongEscrow(escrow, msg.value);

        jobId = ++jobCount;
        Job storage j = _jobs[jobId];
        j.requester = msg.sender;
        j.status = JobStatus.Open;
        j.coordinator = params.coordinator;
        j.numStages = params.numStages;
        j.unitsPerStage = params.unitsPerStage;
        j.claimDuration = params.claimDuration;
        j.pricePerUnit = params.pricePerUnit;
        j.escrowRemaining = escrow;
        j.modelSpecDigest = params.modelSpecDigest;
        j.initialCheckpointDigest = params.initialCheckpointDigest;
        j.datasetDigest = params.datasetDigest;
        j.planDigest = params.planDigest;
        j.latestCheckpointDigest = params.initialCheckpointDigest;
        totalEscrow += escrow;
        emit JobPosted(
            jobId,
            msg.sender,
            params.coordinator,
            params.modelSpecDigest,
            params.initialCheckpointDigest,
            params.datasetDigest,
            params.planDigest,
            params.numStages,
            params.unitsPerStage,
            params.pricePerUnit,
            params.claimDuration,
            escrow
        );
    }

    /// @notice Cancel an Open job (requester only): no claim is accepted from now on. Claims already made may
    ///         still submit until their deadlines; the refund waits for the job's last claim deadline.
    /// @param jobId The job.
    function cancelJob(uint256 jobId) external {
        Job storage j = _existingJob(jobId);
        if (msg.sender != j.requester) revert NotRequester(jobId, msg.sender);
        if (j.status != JobStatus.Open) revert JobNotOpen(jobId, j.status);
        j.status = JobStatus.Cancelled;
        emit JobCancelled(jobId, j.currentStage, j.lastClaimDeadline);
    }

    /// @notice Credit the job's unspent escrow to the requester's withdrawable balance (requester only): at any
    ///         time once the job is Finished; once a Cancelled job's last claim deadline has passed (no payment
    ///         can happen after that).
    /// @param jobId The job.
    function refund(uint256 jobId) external {
        Job storage j = _existingJob(jobId);
        if (msg.sender != j.requester) revert NotRequester(jobId, msg.sender);
        JobStatus status = j.status;
        if (
            status == JobStatus.Open
                || (status == JobStatus.Cancelled && block.timestamp <= j.lastClaimDeadline)
        ) revert RefundNotYet(jobId, status, j.lastClaimDeadline);
        uint256 amount = j.escrowRemaining;
        if (amount == 0) revert NothingToRefund(jobId);
        j.escrowRemaining = 0;
        totalEscrow -= amount;
        _balances[msg.sender] += amount;
        totalOwed += amount;
        emit Refunded(jobId, msg.sender, amount);
    }

    /// @notice Commit the checkpoint that merges the accepted results of the current stage (coordinator only,
    ///         once every unit of the stage is Accepted). The next stage's units become claimable; committing the
    ///         last stage's checkpoint finishes the job with it as the final model.
    /// @param jobId The job.
    /// @param stage The job's current stage (guards against a delayed transaction).
    /// @param checkpoint Digest of the CIDv0 of the merged weights.
    function commitCheckpoint(uint256 jobId, uint32 stage, bytes32 checkpoint) external {
        Job storage j = _existingJob(jobId);
        if (msg.sender != j.coordinator) revert NotCoordinator(jobId, msg.sender);
        if (j.status != JobStatus.Open) revert JobNotOpen(jobId, j.status);
        if (stage != j.currentStage) revert WrongStage(jobId, j.currentStage, stage);
        if (j.acceptedInStage != j.unitsPerStage) {
            revert StageIncomplete(jobId, stage, j.acceptedInStage, j.unitsPerStage);
        }
        if (checkpoint == bytes32(0)) revert EmptyDigest();
        _checkpoints[jobId][stage] = checkpoint;
        j.latestCheckpointDigest = checkpoint;
        emit CheckpointCommitted(jobId, stage, checkpoint);
        if (stage + 1 == j.numStages) {
            j.status = JobStatus.Finished;
            j.finalModelDigest = checkpoint;
            emit JobFinished(jobId, checkpoint);
        } else {
            j.currentStage = stage + 1;
            j.acceptedInStage = 0;
        }
    }

    // ---------------------------------------------------------------- units

    /// @notice Claim a replica slot (0 or 1) of an Open unit of the job's current stage (a Disputed unit's arbiter
    ///         is drawn, never claimed: `drawArbiter`). A slot is free if never taken or if its claim expired
    ///         without a commitment; that claim is closed: ClaimExpired, its worker is excluded from the unit and
    ///         forfeits expiryForfeit (StakeForfeited). The caller needs stake >= minStake * (openClaims + 1)
    ///         (InsufficientStake), may hold only one slot of a unit, and may not claim a unit it was excluded from
    ///         (it worked on the unit before a reset, let a claim on it expire, or let its reveal window pass).
    /// @param jobId The job (must be Open).
    /// @param unitIndex Global unit index, in [0, numStages * unitsPerStage).
    /// @return slot The slot taken; the claim's deadline is now + claimDuration.
    function claimUnit(uint256 jobId, uint32 unitIndex) external returns (uint8 slot) {
        Job storage j = _existingJob(jobId);
        if (j.status != JobStatus.Open) revert JobNotOpen(jobId, j.status);
        uint32 stage = _stageOf(j, jobId, unitIndex);
        if (stage != j.currentStage) revert StageNotCurrent(jobId, unitIndex, stage, j.currentStage);
        Worker storage w = _workers[msg.sender];
        if (!w.registered) revert NotRegistered(msg.sender);
        uint256 stake = w.stake;
        if (stake < minStake) revert StakeTooLow(msg.sender, stake, minStake);
        uint256 required = minStake * (uint256(w.openClaims) + 1);
        if (stake < required) revert InsufficientStake(msg.sender, stake, required);

        Unit storage u = _units[jobId][unitIndex];
        UnitStatus status = _status(u);
        if (status != UnitStatus.Open) revert UnitNotClaimable(jobId, unitIndex, status);
        if (
            u.claims[0].worker == msg.sender || u.claims[1].worker == msg.sender
                || _excluded[jobId][unitIndex][msg.sender]
        ) revert AlreadyWorkedOn(jobId, unitIndex, msg.sender);
        if (_isFree(u, 0)) slot = 0;
        else if (_isFree(u, 1)) slot = 1;
        else revert NoFreeSlot(jobId, unitIndex);

        Claim storage c = u.claims[slot];
        address previous = c.worker;
        if (previous != address(0)) _expireReplica(j, jobId, unitIndex, u, slot, previous);
        uint64 deadline = uint64(block.timestamp) + j.claimDuration;
        c.worker = msg.sender;
        c.deadline = deadline;
        ++w.openClaims;
        if (deadline > j.lastClaimDeadline) j.lastClaimDeadline = deadline;
        emit UnitClaimed(jobId, unitIndex, msg.sender, slot, deadline);
    }

    /// @notice A replica seals its result before its claim's deadline, once: `commitment` is
    ///         `resultCommitment(msg.sender, resultTag(jobId, unitIndex, resets, resultDigest))`. Nobody can copy
    ///         it: it is bound to the sender and hides the digest. The second commitment opens the unit's reveal
    ///         window (claimDuration seconds). Works in a cancelled job too, for claims made before the
    ///         cancellation.
    /// @param jobId The job.
    /// @param unitIndex The unit.
    /// @param commitment The sealed result (non-zero).
    function commitResult(uint256 jobId, uint32 unitIndex, bytes32 commitment) external {
        if (commitment == bytes32(0)) revert EmptyDigest();
        Job storage j = _existingJob(jobId);
        Unit storage u = _units[jobId][unitIndex];
        uint8 slot = _replicaSlot(u, jobId, unitIndex);
        if (u.seals[slot] != bytes32(0)) revert AlreadySubmitted(jobId, unitIndex, msg.sender);
        uint64 deadline = u.claims[slot].deadline;
        if (block.timestamp > deadline) revert DeadlinePassed(jobId, unitIndex, msg.sender, deadline);

        u.seals[slot] = commitment;
        emit ResultCommitted(jobId, unitIndex, msg.sender, slot, commitment);
        if (u.seals[1 - slot] == bytes32(0)) return;
        uint64 revealDeadline = uint64(block.timestamp) + j.claimDuration;
        u.revealDeadline = revealDeadline;
        // Payments can happen until the reveal window closes: the cancelled job's refund must wait for it too.
        if (revealDeadline > j.lastClaimDeadline) j.lastClaimDeadline = revealDeadline;
        emit RevealOpened(jobId, unitIndex, revealDeadline);
    }

    /// @notice A replica reveals the tag it committed to, once both replicas have committed and before the reveal
    ///         window closes. The tag still hides the digest, so a mismatch leaves nothing an arbiter could copy:
    ///         two different tags dispute the unit (UnitDisputed) and schedule the draw of its arbiter with this
    ///         block's hash (ArbiterDrawScheduled); two equal tags wait for either replica to `publishResult`.
    /// @param jobId The job.
    /// @param unitIndex The unit.
    /// @param tag `resultTag(jobId, unitIndex, resets, resultDigest)` of the committed result.
    function revealResult(uint256 jobId, uint32 unitIndex, bytes32 tag) external {
        Job storage j = _existingJob(jobId);
        Unit storage u = _units[jobId][unitIndex];
        uint8 slot = _replicaSlot(u, jobId, unitIndex);
        _reveal(u, jobId, unitIndex, slot, tag);
        if (u.revealed != BOTH_REVEALED) return;
        bytes32 tag0 = u.seals[0];
        bytes32 tag1 = u.seals[1];
        if (tag0 == tag1) return;
        uint64 disputeDeadline = uint64(block.timestamp + DISPUTE_WINDOW * j.claimDuration);
        u.disputeDeadline = disputeDeadline;
        emit UnitDisputed(jobId, unitIndex, tag0, tag1, disputeDeadline);
        _scheduleDraw(jobId, unitIndex, u);
    }

    /// @notice A replica publishes the result both replicas agreed on, which accepts the unit and pays both.
    ///         The caller's tag is revealed here if it was not yet (one transaction instead of two), but only if
    ///         the other replica's revealed tag equals it: a digest is never published while it could still be
    ///         disputed.
    /// @param jobId The job.
    /// @param unitIndex The unit.
    /// @param resultDigest Digest of the CIDv0 of the unit's result (the coordinator fetches it by this).
    function publishResult(uint256 jobId, uint32 unitIndex, bytes32 resultDigest) external {
        if (resultDigest == bytes32(0)) revert EmptyDigest();
        Job storage j = _existingJob(jobId);
        Unit storage u = _units[jobId][unitIndex];
        uint8 slot = _replicaSlot(u, jobId, unitIndex);
        if (u.accepted != bytes32(0)) revert AlreadyAccepted(jobId, unitIndex);
        bytes32 tag = resultTag(jobId, unitIndex, u.resets, resultDigest);
        if (u.revealed & (uint8(1) << slot) == 0) {
            _reveal(u, jobId, unitIndex, slot, tag);
        } else if (block.timestamp > u.revealDeadline) {
            revert DeadlinePassed(jobId, unitIndex, msg.sender, u.revealDeadline);
        }
        if (u.revealed != BOTH_REVEALED || u.seals[0] != tag || u.seals[1] != tag) {
            revert ResultsNotAgreed(jobId, unitIndex);
        }
        _accept(j, jobId, unitIndex, u, u.claims[0].worker, u.claims[1].worker, resultDigest);
    }

    /// @notice The drawn arbiter of a Disputed unit (only it) submits its result in the clear, before its
    ///         deadline: the replicas' tags hide their digests, so the arbiter cannot copy one. Equal to one replica's tag: the
    ///         unit is Accepted with this digest, that replica and the arbiter are paid, the other replica is
    ///         slashed. Equal to neither: the unit is Reset.
    /// @param jobId The job.
    /// @param unitIndex The unit.
    /// @param resultDigest Digest of the CIDv0 of the arbiter's result.
    function submitArbitration(uint256 jobId, uint32 unitIndex, bytes32 resultDigest) external {
        if (resultDigest == bytes32(0)) revert EmptyDigest();
        Job storage j = _existingJob(jobId);
        Unit storage u = _units[jobId][unitIndex];
        if (u.claims[ARBITER_SLOT].worker != msg.sender) revert NotClaimant(jobId, unitIndex, msg.sender);
        UnitStatus status = _status(u);
        if (status != UnitStatus.Disputed) revert UnitNotDisputed(jobId, unitIndex, status);
        uint64 deadline = u.claims[ARBITER_SLOT].deadline;
        if (block.timestamp > deadline) revert DeadlinePassed(jobId, unitIndex, msg.sender, deadline);

        emit ArbitrationSubmitted(jobId, unitIndex, msg.sender, resultDigest);
        bytes32 tag = resultTag(jobId, unitIndex, u.resets, resultDigest);
        uint8 good;
        if (tag == u.seals[0]) {
            good = 0;
        } else if (tag == u.seals[1]) {
            good = 1;
        } else {
            _reset(jobId, unitIndex, u, msg.sender);
            return;
        }
        address agreeing = u.claims[good].worker;
        address odd = u.claims[1 - good].worker;
        _accept(j, jobId, unitIndex, u, agreeing, msg.sender, resultDigest);
        _slash(jobId, unitIndex, odd, agreeing, msg.sender);
    }

    /// @notice Close a unit's reveal window that passed without acceptance or dispute, anyone may call it. A
    ///         replica that did not reveal its tag is excluded from the unit; if both revealed equal tags but
    ///         neither published the digest, both are excluded. Each excluded replica forfeits slashAmount (as much
    ///         as a wrong result costs, so withholding a reveal never beats revealing a wrong tag), credited to the
    ///         other replica if that one revealed and is not excluded, else to the job's escrow (StakeForfeited).
    ///         Both claims close and the unit opens again with `resets` + 1, which changes every tag, so a tag
    ///         revealed before is worthless to a new replica.
    /// @param jobId The job.
    /// @param unitIndex The unit.
    function expireReveal(uint256 jobId, uint32 unitIndex) external {
        Job storage j = _existingJob(jobId);
        Unit storage u = _units[jobId][unitIndex];
        UnitStatus status = _status(u);
        if (status != UnitStatus.Revealing) revert NotRevealing(jobId, unitIndex, status);
        uint64 revealDeadline = u.revealDeadline;
        if (block.timestamp <= revealDeadline) revert RevealNotExpired(jobId, unitIndex, revealDeadline);
        uint8 revealed = u.revealed;
        // Both revealed (and, being Revealing, agreed): both know the digest and kept it back.
        bool excludeBoth = revealed == BOTH_REVEALED;
        address[2] memory replicas = [u.claims[0].worker, u.claims[1].worker];
        bool[2] memory excluded;
        mapping(address => bool) storage excludedOf = _excluded[jobId][unitIndex];
        for (uint8 i; i < 2; ++i) {
            excluded[i] = excludeBoth || revealed & (uint8(1) << i) == 0;
            if (excluded[i]) excludedOf[replicas[i]] = true;
            --_workers[replicas[i]].openClaims;
        }
        uint32 resets = _clearUnit(u);
        emit RevealExpired(jobId, unitIndex, resets, replicas[0], excluded[0], replicas[1], excluded[1]);
        for (uint8 i; i < 2; ++i) {
            if (!excluded[i]) continue;
            address beneficiary = excluded[1 - i] ? address(0) : replicas[1 - i];
            _forfeit(j, jobId, unitIndex, replicas[i], slashAmount, beneficiary);
        }
    }

    /// @notice Draw the arbiter of a Disputed unit, anyone may call it, from the block after the draw was scheduled
    ///         (the dispute, a failed draw, or an arbiter that did not answer) until the dispute's deadline. The
    ///         beacon is the hash of block `drawBlock`; the draw takes the first eligible worker among
    ///         ARBITER_DRAW_TRIES pool places derived from it (see the contract's notes: not a replica, not
    ///         excluded, stake >= minStake held since a block <= drawBlock, stake for one more open claim). The
    ///         drawn worker holds the arbiter slot until now + claimDuration (ArbiterDrawn). If blockhash(drawBlock)
    ///         is no longer available (more than 256 blocks ago) or no try is eligible, the draw is scheduled again
    ///         from this block (ArbiterDrawScheduled) and zero is returned.
    /// @param jobId The job (must be Open).
    /// @param unitIndex The Disputed unit, without a drawn arbiter.
    /// @return arbiter The drawn worker, or zero if the draw was scheduled again.
    function drawArbiter(uint256 jobId, uint32 unitIndex) external returns (address arbiter) {
        Job storage j = _existingJob(jobId);
        if (j.status != JobStatus.Open) revert JobNotOpen(jobId, j.status);
        Unit storage u = _units[jobId][unitIndex];
        UnitStatus status = _status(u);
        if (status != UnitStatus.Disputed) revert UnitNotDisputed(jobId, unitIndex, status);
        address current = u.claims[ARBITER_SLOT].worker;
        if (current != address(0)) revert ArbiterAlreadyDrawn(jobId, unitIndex, current);
        uint64 disputeDeadline = u.disputeDeadline;
        if (block.timestamp > disputeDeadline) revert DisputeWindowClosed(jobId, unitIndex, disputeDeadline);
        uint256 drawBlock = u.drawBlock;
        if (block.number <= drawBlock) revert DrawNotReady(jobId, unitIndex, uint64(drawBlock));

        bytes32 beacon = blockhash(drawBlock);
        if (beacon != bytes32(0)) arbiter = _pick(u, jobId, unitIndex, beacon);
        if (arbiter == address(0)) {
            _scheduleDraw(jobId, unitIndex, u);
            return address(0);
        }
        uint64 deadline = uint64(block.timestamp) + j.claimDuration;
        Claim storage c = u.claims[ARBITER_SLOT];
        c.worker = arbiter;
        c.deadline = deadline;
        ++_workers[arbiter].openClaims;
        if (deadline > j.lastClaimDeadline) j.lastClaimDeadline = deadline;
        emit ArbiterDrawn(jobId, unitIndex, arbiter, deadline);
    }

    /// @notice Close a dispute that reached its deadline without a verdict, anyone may call it: no arbiter could be
    ///         drawn, or none answered. A drawn arbiter whose deadline passed is closed first (it forfeits
    ///         expiryForfeit to the job, ClaimExpired); one still within its deadline makes this revert
    ///         (ArbiterPending). Neither replica is proven wrong: both are released unslashed, both are excluded
    ///         from the unit, and the unit is Open again with `resets` + 1 (DisputeExpired).
    /// @param jobId The job.
    /// @param unitIndex The Disputed unit.
    function expireDispute(uint256 jobId, uint32 unitIndex) external {
        Job storage j = _existingJob(jobId);
        Unit storage u = _units[jobId][unitIndex];
        UnitStatus status = _status(u);
        if (status != UnitStatus.Disputed) revert UnitNotDisputed(jobId, unitIndex, status);
        uint64 disputeDeadline = u.disputeDeadline;
        if (block.timestamp <= disputeDeadline) revert DisputeNotExpired(jobId, unitIndex, disputeDeadline);
        Claim storage a = u.claims[ARBITER_SLOT];
        address arbiter = a.worker;
        if (arbiter != address(0)) {
            if (block.timestamp <= a.deadline) revert ArbiterPending(jobId, unitIndex, arbiter, a.deadline);
            _expireArbiter(j, jobId, unitIndex, u, arbiter);
        }
        address replica0 = u.claims[0].worker;
        address replica1 = u.claims[1].worker;
        mapping(address => bool) storage excluded = _excluded[jobId][unitIndex];
        excluded[replica0] = true;
        excluded[replica1] = true;
        --_workers[replica0].openClaims;
        --_workers[replica1].openClaims;
        uint32 resets = _clearUnit(u);
        emit DisputeExpired(jobId, unitIndex, resets, replica0, replica1);
    }

    /// @notice Close a claim, anyone may call it:
    ///         - a claim whose deadline passed without a commitment (replica) or result (arbiter): ClaimExpired.
    ///           Its worker is excluded from the unit and, in an Open job, forfeits expiryForfeit (StakeForfeited):
    ///           a replica's goes to the other replica if that one committed, else to the job's escrow; an
    ///           arbiter's to the job's escrow, and a new arbiter draw is scheduled (ArbiterDrawScheduled);
    ///         - a replica's committed claim on a unit still Open (the other slot never committed) one claimDuration
    ///           after its own deadline: ClaimReleased, unpenalised, so an honest worker's stake is never locked
    ///           longer than that by a partner slot that others keep claiming and abandoning;
    ///         - in a Cancelled job once its last deadline has passed, a replica's committed claim on a unit that
    ///           was not Accepted (the unit can no longer be verified): ClaimReleased.
    ///         Either way the slot is cleared and its worker's openClaims decreases.
    /// @param jobId The job.
    /// @param unitIndex The unit.
    /// @param slot The claim slot (0, 1: replicas; 2: arbiter).
    function expireClaim(uint256 jobId, uint32 unitIndex, uint8 slot) external {
        if (slot > ARBITER_SLOT) revert InvalidSlot(slot);
        Job storage j = _existingJob(jobId);
        Unit storage u = _units[jobId][unitIndex];
        Claim storage c = u.claims[slot];
        address holder = c.worker;
        if (holder == address(0)) revert NoClaim(jobId, unitIndex, slot);
        UnitStatus status = _status(u);
        if (slot == ARBITER_SLOT || u.seals[slot] == bytes32(0)) {
            // An arbiter's claim stays in the slot after its result accepted the unit (it was closed then).
            if (status == UnitStatus.Accepted) revert ClaimNotReleasable(jobId, unitIndex, slot);
            if (block.timestamp <= c.deadline) revert ClaimNotExpired(jobId, unitIndex, slot, c.deadline);
            if (slot == ARBITER_SLOT) {
                _expireArbiter(j, jobId, unitIndex, u, holder);
                if (status == UnitStatus.Disputed) _scheduleDraw(jobId, unitIndex, u);
            } else {
                _expireReplica(j, jobId, unitIndex, u, slot, holder);
            }
        } else {
            bool lonely = status == UnitStatus.Open && block.timestamp > uint256(c.deadline) + j.claimDuration;
            bool unverifiable = j.status == JobStatus.Cancelled && block.timestamp > j.lastClaimDeadline
                && status != UnitStatus.Accepted;
            if (!lonely && !unverifiable) revert ClaimNotReleasable(jobId, unitIndex, slot);
            delete u.claims[slot];
            delete u.seals[slot];
            u.revealed &= ~(uint8(1) << slot);
            u.revealDeadline = 0;
            u.drawBlock = 0;
            u.drawPoolSize = 0;
            u.disputeDeadline = 0;
            --_workers[holder].openClaims;
            emit ClaimReleased(jobId, unitIndex, holder, slot);
        }
    }

    /// @notice The tag of a result: what a replica reveals, and what an arbiter's result is compared with.
    ///         `attempt` is the unit's `resets`, so tags of an earlier attempt are worthless.
    /// @param jobId The job.
    /// @param unitIndex The unit.
    /// @param attempt The unit's resets when the result was computed.
    /// @param resultDigest Digest of the CIDv0 of the result.
    /// @return keccak256(abi.encode(jobId, unitIndex, attempt, resultDigest)).
    function resultTag(uint256 jobId, uint32 unitIndex, uint32 attempt, bytes32 resultDigest)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(jobId, unitIndex, attempt, resultDigest));
    }

    /// @notice The commitment a replica submits: its tag bound to its address, so nobody else can reuse it.
    /// @param account The replica.
    /// @param tag The result's tag (`resultTag`).
    /// @return keccak256(abi.encode(account, tag)).
    function resultCommitment(address account, bytes32 tag) public pure returns (bytes32) {
        return keccak256(abi.encode(account, tag));
    }

    // ---------------------------------------------------------------- payments

    /// @notice Send the caller its whole withdrawable balance (payments, slash shares, refunds).
    function withdraw() external nonReentrant {
        uint256 amount = _balances[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        _balances[msg.sender] = 0;
        totalOwed -= amount;
        emit Withdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    // ---------------------------------------------------------------- views

    /// @notice A job's state and configuration. Reverts UnknownJob for an id that was never posted.
    /// @param jobId The job.
    /// @return The job.
    function job(uint256 jobId) external view returns (Job memory) {
        return _existingJob(jobId);
    }

    /// @notice A unit's state: status, resets, per slot (0, 1 replicas, 2 arbiter) the worker and the claim
    ///         deadline, the replicas' commitments or revealed tags, the reveal window, the accepted result, and
    ///         for a Disputed unit the arbiter draw (beacon block and pool size) and the dispute's deadline.
    /// @param jobId The job.
    /// @param unitIndex The unit (reverts UnitOutOfRange beyond the job's units).
    /// @return view_ The unit.
    function unit(uint256 jobId, uint32 unitIndex) external view returns (UnitView memory view_) {
        Job storage j = _existingJob(jobId);
        _stageOf(j, jobId, unitIndex);
        Unit storage u = _units[jobId][unitIndex];
        view_.status = _status(u);
        view_.resets = u.resets;
        for (uint8 i; i <= ARBITER_SLOT; ++i) {
            view_.workers[i] = u.claims[i].worker;
            view_.deadlines[i] = u.claims[i].deadline;
        }
        uint8 revealed = u.revealed;
        for (uint8 i; i < 2; ++i) {
            view_.seals[i] = u.seals[i];
            view_.revealed[i] = revealed & (uint8(1) << i) != 0;
        }
        view_.revealDeadline = u.revealDeadline;
        view_.acceptedDigest = u.accepted;
        view_.drawBlock = u.drawBlock;
        view_.drawPoolSize = u.drawPoolSize;
        view_.disputeDeadline = u.disputeDeadline;
    }

    /// @notice The number of places in the pool arbiters are drawn from (every worker ever registered).
    /// @return The pool's size.
    function poolSize() external view returns (uint256) {
        return _pool.length;
    }

    /// @notice The worker at place `index` of the pool arbiters are drawn from (registration order).
    /// @param index The place, below poolSize().
    /// @return The worker.
    function workerPool(uint256 index) external view returns (address) {
        return _pool[index];
    }

    /// @notice The accepted result of a unit (zero until Accepted): what the coordinator merges.
    /// @param jobId The job.
    /// @param unitIndex The unit.
    /// @return The accepted result's digest, or zero.
    function acceptedDigest(uint256 jobId, uint32 unitIndex) external view returns (bytes32) {
        return _units[jobId][unitIndex].accepted;
    }

    /// @notice The checkpoint committed for a stage (zero until committed).
    /// @param jobId The job.
    /// @param stage The stage.
    /// @return The checkpoint's digest, or zero.
    function checkpointDigest(uint256 jobId, uint32 stage) external view returns (bytes32) {
        return _checkpoints[jobId][stage];
    }

    /// @notice Whether `account` may never claim the unit again (it worked on it before a reset, let a claim on it
    ///         expire, or was released from its expired dispute); an excluded worker is never drawn as its arbiter.
    /// @param jobId The job.
    /// @param unitIndex The unit.
    /// @param account The worker.
    /// @return True if excluded.
    function isExcluded(uint256 jobId, uint32 unitIndex, address account) external view returns (bool) {
        return _excluded[jobId][unitIndex][account];
    }

    /// @notice A worker's stake, open claims, paid units, faults, and since which block its stake is at least
    ///         minStake (all zero and registered false if unknown).
    /// @param account The worker.
    /// @return The worker.
    function worker(address account) external view returns (Worker memory) {
        return _workers[account];
    }

    /// @notice Wei `account` can withdraw now.
    /// @param account Any account.
    /// @return The withdrawable balance.
    function balanceOf(address account) external view returns (uint256) {
        return _balances[account];
    }

    /// @notice The exact msg.value `postJob` requires for a job of this shape and price.
    /// @param numStages Stages of the job.
    /// @param unitsPerStage Units per stage.
    /// @param pricePerUnit Price per replica per unit.
    /// @return numStages * unitsPerStage * pricePerUnit * ESCROW_FACTOR.
    function escrowRequired(uint32 numStages, uint32 unitsPerStage, uint256 pricePerUnit)
        external
        pure
        returns (uint256)
    {
        return uint256(numStages) * unitsPerStage * pricePerUnit * ESCROW_FACTOR;
    }

    // ---------------------------------------------------------------- internals

    function _existingJob(uint256 jobId) private view returns (Job storage j) {
        j = _jobs[jobId];
        if (j.status == JobStatus.None) revert UnknownJob(jobId);
    }

    function _stageOf(Job storage j, uint256 jobId, uint32 unitIndex) private view returns (uint32) {
        uint32 unitsPerStage = j.unitsPerStage;
        uint32 numUnits = j.numStages * unitsPerStage;
        if (unitIndex >= numUnits) revert UnitOutOfRange(jobId, unitIndex, numUnits);
        return unitIndex / unitsPerStage;
    }

    /// @dev The caller's replica slot of the unit (NotClaimant if it holds neither replica slot).
    function _replicaSlot(Unit storage u, uint256 jobId, uint32 unitIndex) private view returns (uint8) {
        if (u.claims[0].worker == msg.sender) return 0;
        if (u.claims[1].worker == msg.sender) return 1;
        revert NotClaimant(jobId, unitIndex, msg.sender);
    }

    /// @dev Reveal `tag` for replica `slot`: the window is open, the slot has not revealed, and the tag opens the
    ///      slot's commitment. The tag replaces the commitment (a non-zero to non-zero write).
    function _reveal(Unit storage u, uint256 jobId, uint32 unitIndex, uint8 slot, bytes32 tag) private {
        uint64 revealDeadline = u.revealDeadline;
        if (revealDeadline == 0) revert RevealNotOpen(jobId, unitIndex);
        if (block.timestamp > revealDeadline) revert DeadlinePassed(jobId, unitIndex, msg.sender, revealDeadline);
        uint8 bit = uint8(1) << slot;
        if (u.revealed & bit != 0) revert AlreadyRevealed(jobId, unitIndex, msg.sender);
        if (resultCommitment(msg.sender, tag) != u.seals[slot]) revert WrongReveal(jobId, unitIndex, msg.sender);
        u.seals[slot] = tag;
        u.revealed |= bit;
        emit ResultRevealed(jobId, unitIndex, msg.sender, slot, tag);
    }

    /// @dev The status the unit's fields imply. Accepted: a digest was accepted. Disputed: both tags revealed and
    ///      different. Revealing: both replicas committed (reveal window set). Open otherwise.
    function _status(Unit storage u) private view returns (UnitStatus) {
        if (u.accepted != bytes32(0)) return UnitStatus.Accepted;
        if (u.revealDeadline == 0) return UnitStatus.Open;
        if (u.revealed == BOTH_REVEALED && u.seals[0] != u.seals[1]) return UnitStatus.Disputed;
        return UnitStatus.Revealing;
    }

    /// @dev A replica slot is free if never taken (or cleared), or if its claim expired without a commitment.
    function _isFree(Unit storage u, uint8 slot) private view returns (bool) {
        Claim storage c = u.claims[slot];
        if (c.worker == address(0)) return true;
        if (u.seals[slot] != bytes32(0)) return false;
        return block.timestamp > c.deadline;
    }

    /// @dev Set a worker's stake; `activeSince` becomes this block when the stake reaches minStake from below, and
    ///      zero when it falls below minStake.
    function _setStake(Worker storage w, uint256 before, uint256 stake) private {
        w.stake = SafeCast.toUint96(stake);
        if (stake < minStake) {
            w.activeSince = 0;
        } else if (before < minStake) {
            w.activeSince = uint48(block.number);
        }
    }

    /// @dev `account` forfeits min(stake, amount) of its stake to `beneficiary`'s balance, or to the job's escrow
    ///      if `beneficiary` is zero; one more fault.
    function _forfeit(
        Job storage j,
        uint256 jobId,
        uint32 unitIndex,
        address account,
        uint256 amount,
        address beneficiary
    ) private {
        Worker storage w = _workers[account];
        uint256 stake = w.stake;
        uint256 taken = stake < amount ? stake : amount;
        uint32 faults = w.faults + 1;
        w.faults = faults;
        _setStake(w, stake, stake - taken);
        totalStaked -= taken;
        if (beneficiary == address(0)) {
            j.escrowRemaining += taken;
            totalEscrow += taken;
        } else {
            _balances[beneficiary] += taken;
            totalOwed += taken;
        }
        emit StakeForfeited(jobId, unitIndex, account, taken, beneficiary, faults);
    }

    /// @dev Close replica `slot`'s claim, expired without a commitment: its worker is excluded from the unit and,
    ///      in an Open job, forfeits expiryForfeit to the other replica if that one committed, else to the job.
    function _expireReplica(Job storage j, uint256 jobId, uint32 unitIndex, Unit storage u, uint8 slot, address holder)
        private
    {
        delete u.claims[slot];
        --_workers[holder].openClaims;
        _excluded[jobId][unitIndex][holder] = true;
        emit ClaimExpired(jobId, unitIndex, holder, slot);
        if (j.status != JobStatus.Open) return;
        uint8 other = 1 - slot;
        address beneficiary = u.seals[other] != bytes32(0) ? u.claims[other].worker : address(0);
        _forfeit(j, jobId, unitIndex, holder, expiryForfeit, beneficiary);
    }

    /// @dev Close the arbiter's claim, expired without a result: it is excluded from the unit and, in an Open job,
    ///      forfeits expiryForfeit to the job.
    function _expireArbiter(Job storage j, uint256 jobId, uint32 unitIndex, Unit storage u, address holder) private {
        delete u.claims[ARBITER_SLOT];
        --_workers[holder].openClaims;
        _excluded[jobId][unitIndex][holder] = true;
        emit ClaimExpired(jobId, unitIndex, holder, ARBITER_SLOT);
        if (j.status == JobStatus.Open) _forfeit(j, jobId, unitIndex, holder, expiryForfeit, address(0));
    }

    /// @dev The arbiter of the Disputed unit is drawn with the hash of this block among the pool's current places.
    function _scheduleDraw(uint256 jobId, uint32 unitIndex, Unit storage u) private {
        uint48 drawBlock = uint48(block.number);
        uint32 size = uint32(_pool.length);
        u.drawBlock = drawBlock;
        u.drawPoolSize = size;
        emit ArbiterDrawScheduled(jobId, unitIndex, drawBlock, size);
    }

    /// @dev The first eligible worker among ARBITER_DRAW_TRIES pool places derived from `beacon`, or zero.
    function _pick(Unit storage u, uint256 jobId, uint32 unitIndex, bytes32 beacon) private view returns (address) {
        uint256 size = u.drawPoolSize;
        uint256 drawBlock = u.drawBlock;
        address replica0 = u.claims[0].worker;
        address replica1 = u.claims[1].worker;
        bytes32 seed = keccak256(abi.encode(beacon, jobId, unitIndex, u.resets));
        mapping(address => bool) storage excluded = _excluded[jobId][unitIndex];
        for (uint256 i; i < ARBITER_DRAW_TRIES; ++i) {
            address candidate = _pool[uint256(keccak256(abi.encode(seed, i))) % size];
            if (candidate == replica0 || candidate == replica1 || excluded[candidate]) continue;
            Worker storage w = _workers[candidate];
            uint256 since = w.activeSince;
            if (since == 0 || since > drawBlock) continue;
            if (w.stake < minStake * (uint256(w.openClaims) + 1)) continue;
            return candidate;
        }
        return address(0);
    }

    /// @dev Clear the unit's claims, seals, reveal and dispute state, and count one more attempt.
    function _clearUnit(Unit storage u) private returns (uint32 resets) {
        delete u.claims;
        delete u.seals;
        u.revealDeadline = 0;
        u.revealed = 0;
        u.drawBlock = 0;
        u.drawPoolSize = 0;
        u.disputeDeadline = 0;
        resets = u.resets + 1;
        u.resets = resets;
    }

    /// @dev `odd` disagreed with the arbiter: it loses min(stake, slashAmount), split between the replica that
    ///      agreed (odd wei) and the arbiter.
    function _slash(uint256 jobId, uint32 unitIndex, address odd, address agreeing, address arbiter) private {
        Worker storage w = _workers[odd];
        --w.openClaims;
        uint32 faults = w.faults + 1;
        w.faults = faults;
        uint256 stake = w.stake;
        uint256 amount = stake < slashAmount ? stake : slashAmount;
        _setStake(w, stake, stake - amount);
        totalStaked -= amount;
        totalOwed += amount;
        uint256 half = amount / 2;
        _balances[agreeing] += amount - half;
        _balances[arbiter] += half;
        emit WorkerSlashed(jobId, unitIndex, odd, amount, faults);
    }

    /// @dev The unit is Accepted with `result`; `a` and `b` are paid pricePerUnit each.
    function _accept(
        Job storage j,
        uint256 jobId,
        uint32 unitIndex,
        Unit storage u,
        address a,
        address b,
        bytes32 result
    ) private {
        u.accepted = result;
        ++j.acceptedInStage;
        uint256 price = j.pricePerUnit;
        j.escrowRemaining -= 2 * price;
        totalEscrow -= 2 * price;
        totalOwed += 2 * price;
        _balances[a] += price;
        _balances[b] += price;
        _paid(_workers[a]);
        _paid(_workers[b]);
        emit UnitAccepted(jobId, unitIndex, result, a, b, price);
    }

    function _paid(Worker storage w) private {
        --w.openClaims;
        ++w.completedUnits;
    }

    /// @dev Three different results: exclude the three workers from the unit and open it again.
    function _reset(uint256 jobId, uint32 unitIndex, Unit storage u, address arbiter) private {
        address replica0 = u.claims[0].worker;
        address replica1 = u.claims[1].worker;
        mapping(address => bool) storage excluded = _excluded[jobId][unitIndex];
        excluded[replica0] = true;
        excluded[replica1] = true;
        excluded[arbiter] = true;
        --_workers[replica0].openClaims;
        --_workers[replica1].openClaims;
        --_workers[arbiter].openClaims;
        uint32 resets = _clearUnit(u);
        emit UnitReset(jobId, unitIndex, resets, replica0, replica1, arbiter);
    }

    function _send(address to, uint256 amount) private {
        (bool ok,) = payable(to).call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }
}
