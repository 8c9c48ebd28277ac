"""One device's loop: wait for a round, fetch the global model, train on what has arrived, upload, submit."""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eth_account.signers.local import LocalAccount

from fedchain.chain import ContractRevert, EventFollower, Phase, RoundInfo, TaskClient, connect
from fedchain.chain.notify import EventNotifier
from fedchain.learning.attacks import check_attack, flip_labels, poison_model
from fedchain.learning.data import Dataset, OnlineStream, device_partition, load_dataset
from fedchain.learning.light import LightModel, warm_up_light
from fedchain.learning.seeds import round_seed
from fedchain.learning.spec import TaskSpec
from fedchain.learning.types import Weights
from fedchain.storage import IpfsClient, cid_to_digest, digest_to_cid
from fedchain.storage.binding import UpdateBinding
from fedchain.storage.codec import encode_weights

if TYPE_CHECKING:
    from web3 import Web3

    from fedchain.device.private import DevicePrivacy
    from fedchain.device.sensor import DeviceSensor

log = logging.getLogger("fedchain.device")

# Reverts that mean "this round moved on without us": not an error for the device.
ROUND_MOVED_ON = {"WrongPhase", "WrongRound", "AlreadySubmitted"}
# How a device trains: "torch" (fedchain.learning.train), "light" (numpy only, fedchain.learning.light: for gateways
# without a torch wheel) or "auto" (torch where it is installed, else light).
RUNTIMES = ("auto", "torch", "light")
# Events after which a device re-reads the task's state.
WAKE_EVENTS = {
    "RoundOpened",
    "TaskFinished",
    "TaskCancelled",
    "DeviceRemoved",
    "DeviceApproved",
    # Secure aggregation: a device publishes its unmasking shares as soon as the round closes.
    "RoundReadyForAggregation",
}


@dataclass(frozen=True)
class DeviceSettings:
    """How a device finds its task and its local data."""

    task_address: str
    rpc_url: str
    ipfs_api: str
    partition_index: int = 0
    num_partitions: int = 1
    non_iid_alpha: float | None = None
    data_seed: int = 0
    online: bool = True
    initial_fraction: float = 0.3
    per_round_fraction: float = 0.1
    poll_interval: float = 0.25
    state_recheck: float = 5.0
    # Wake on events pushed over the RPC's WebSocket (eth_subscribe); False, or an HTTP-only RPC, polls.
    push: bool = True
    join_timeout: float = 300.0
    # Evaluation only: make this device Byzantine (one of fedchain.learning.attacks.DEVICE_ATTACKS).
    attack: str | None = None
    # Evaluation only: drop out of every secure-aggregation round right after publishing the setup (the dropout
    # SecAgg recovers from by rebuilding the device's mask key from the survivors' shares).
    drop_after_setup: bool = False
    # A streaming wearable (wearable tasks): its recordings replayed at stream_speed x real time into a buffer of
    # the newest stream_buffer windows, which each round trains on (fedchain.device.sensor); 0 = off.
    stream_buffer: int = 0
    stream_speed: float = 1.0
    # Evaluation only: the fraction of windows the sensor hands over with NaN samples (refused and logged).
    sensor_fault_rate: float = 0.0
    # Evaluation only: which kinds of faulty windows (fedchain.device.sensor.FAULT_KINDS), and when the watch is moved
    # (the fraction of the device's recordings after which they arrive in another placement; None: never).
    sensor_fault_kinds: tuple[str, ...] = ("nan",)
    drift_at: float | None = None
    # One of RUNTIMES.
    runtime: str = "auto"


def resolve_runtime(runtime: str) -> str:
    """The runtime a device trains with, "torch" or "light", for one of RUNTIMES ("auto": torch if it is installed,
    looked up without importing it)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {list(RUNTIMES)}")
    if runtime == "auto":
        return "torch" if importlib.util.find_spec("torch") is not None else "light"
    return runtime


def build_device_model(spec: TaskSpec, runtime: str) -> Any:
    """The model a device trains: a torch module, or the light runtime's LightModel (which refuses, with
    LightUnsupported, a model it cannot train the way torch does)."""
    if runtime == "light":
        return LightModel(spec.model, seed=spec.seed)
    from fedchain.learning.model import build_model  # torch: only on the torch runtime

    return build_model(spec.model, seed=spec.seed)


def warm_up_training(spec: TaskSpec, train: Dataset, runtime: str) -> float:
    """One throwaway training step on a copy now, so round 1 does not pay the runtime's first-call costs (weights
    and RNGs untouched). Returns the seconds it took."""
    strategy = spec.strategy_spec()
    mu = float(strategy.params["mu"]) if strategy.name == "fedprox" else 0.0
    if runtime == "light":
        return warm_up_light(spec.model, spec.train, train, seed=spec.seed, proximal_mu=mu)
    from fedchain.learning.train import warm_up

    return warm_up(build_device_model(spec, runtime), train, spec.train, proximal_mu=mu)


@dataclass(frozen=True)
class RoundOutcome:
    round: int
    update_cid: str
    num_samples: int
    train_loss: float
    train_seconds: float
    gas_used: int


@dataclass
class DeviceContext:
    """What the devices of one process share: one chain connection, one IPFS client, the task's description and
    dataset, one event subscription, and the round's global model (fetched once, not once per device)."""

    w3: Web3
    ipfs: IpfsClient
    task: TaskClient
    spec: TaskSpec
    train: Dataset
    notifier: EventNotifier
    # The chain's id, read once: every update is bound to (chain id, task, round, device) in its metadata, and
    # a pool's senders sign with it.
    chain_id: int = 0
    # "torch" or "light" (resolved from DeviceSettings.runtime).
    runtime: str = "torch"
    _models: dict[str, Weights] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: DeviceSettings) -> DeviceContext:
        w3 = connect(settings.rpc_url, wait=30)
        task = TaskClient(w3, settings.task_address)
        ipfs = IpfsClient(settings.ipfs_api)
        spec = TaskSpec.from_json(ipfs.cat(digest_to_cid(task.config().model_spec_digest), max_size=1 << 20))
        train, _ = load_dataset(spec.dataset)
        runtime = resolve_runtime(settings.runtime)
        warm_up_training(spec, train, runtime)  # also where the light runtime refuses a task it cannot train
        log.info("training runtime: %s", "light (numpy only)" if runtime == "light" else "torch")
        notifier = EventNotifier(
            settings.rpc_url, [task.address], poll_interval=settings.poll_interval, push=settings.push
        )
        return cls(w3, ipfs, task, spec, train, notifier, chain_id=int(w3.eth.chain_id), runtime=runtime)

    def global_weights(self, cid: str) -> Weights:
        """The model behind `cid`, fetched (and checked against the CID) once per process; the last two are kept."""
        weights = self._models.get(cid)
        if weights is None:
            weights = self.ipfs.get_weights(cid)
            self._models = {**dict(list(self._models.items())[-1:]), cid: weights}
        return weights

    def close(self) -> None:
        self.notifier.close()


@dataclass(frozen=True)
class TrainedUpdate:
    """A device's trained weights for one round, before upload."""

    round: int
    weights: Weights
    global_weights: Weights
    metadata: dict[str, str]
    num_samples: int
    loss: float
    train_seconds: float
    fetch_seconds: float


@dataclass(frozen=True)
class LocalTraining:
    """One round of local training: the model to submit, its training loss and the seconds training took."""

    weights: Weights
    loss: float
    train_seconds: float


def train_for_round(
    model: Any,
    global_weights: Weights,
    data: Dataset,
    spec: TaskSpec,
    round_index: int,
    address: str,
    proximal_mu: float = 0.0,
    attack: str | None = None,
) -> LocalTraining:
    """Train `model` (a torch module or a LightModel) from the round's global model on `data`, seeded by (task seed,
    round, device): the same bits in any process, in a pool or alone. A device running an `attack` (evaluation only)
    returns its poisoned model."""
    seed = round_seed(spec.seed, round_index, address)
    if isinstance(model, LightModel):
        model.set_weights(global_weights)
        started = time.perf_counter()
        light = model.train(data, spec.train, seed, proximal_mu=proximal_mu, global_weights=global_weights)
        loss, trained = light.loss, light.weights
        train_seconds = time.perf_counter() - started
    else:
        import torch  # the torch runtime only (loaded already: the model is a torch module)

        from fedchain.learning.model import get_weights, set_weights
        from fedchain.learning.train import train_local

        set_weights(model, global_weights)
        torch.manual_seed(seed)
        started = time.perf_counter()
        result = train_local(model, data, spec.train, seed=seed, proximal_mu=proximal_mu, global_weights=global_weights)
        train_seconds = time.perf_counter() - started
        loss, trained = result.loss, get_weights(model)
    if attack is not None:
        trained = poison_model(attack, global_weights, trained, seed=seed)
    return LocalTraining(trained, loss, train_seconds)


def update_metadata(binding: UpdateBinding, num_samples: int, train_seconds: float, loss: float) -> dict[str, str]:
    """The update file's metadata. The binding makes the file (and so its digest) count only for this device's
    submission in this round of this task on this chain: aggregators refuse it from anyone else, in any other round
    (storage.binding)."""
    return {
        "fedchain.kind": "update",
        **binding.metadata(),
        "fedchain.num_samples": str(num_samples),
        "fedchain.train_seconds": f"{train_seconds:.6f}",
        "fedchain.train_loss": f"{loss:.6f}",
    }


class DeviceRunner:
    """Runs one device until the task finishes (or `max_rounds` rounds were trained).

    Many runners can share one `DeviceContext` (a pool of virtual devices, `fedchain.device.pool`): each keeps its
    own key, nonce, data partition, stream, RNG seeds and model, so a device trains the same bits in a pool as in a
    process of its own.
    """

    def __init__(self, settings: DeviceSettings, account: LocalAccount, context: DeviceContext | None = None) -> None:
        self.settings = settings
        self.account = account
        self._owns_context = context is None
        self.context = context if context is not None else DeviceContext.open(settings)
        self.w3 = self.context.w3
        self.task = self.context.task.with_account(account, self.context.chain_id)
        self.ipfs = self.context.ipfs
        self.spec = self.context.spec
        strategy = self.spec.strategy_spec()
        # FedProx is the one strategy with a device-side part: the proximal term pulling towards the global model.
        self.proximal_mu = float(strategy.params["mu"]) if strategy.name == "fedprox" else 0.0
        if settings.attack is not None:
            check_attack(settings.attack)
            log.warning("device %s runs the %r attack (evaluation mode)", account.address, settings.attack)
        self.local_data = device_partition(
            self.context.train,
            settings.partition_index,
            settings.num_partitions,
            settings.non_iid_alpha,
            settings.data_seed,
        )
        if settings.attack == "label-flip":
            self.local_data = flip_labels(self.local_data, self.spec.model.num_classes)
        self.stream = (
            OnlineStream(
                self.local_data,
                settings.initial_fraction,
                settings.per_round_fraction,
                seed=settings.data_seed + settings.partition_index,
            )
            if settings.online
            else None
        )
        self.sensor: DeviceSensor | None = None
        if settings.stream_buffer > 0:
            from fedchain.device.sensor import DeviceSensor  # streaming devices only

            self.sensor = DeviceSensor(
                self.spec,
                self.local_data,
                settings.stream_buffer,
                settings.stream_speed,
                settings.sensor_fault_rate,
                seed=settings.data_seed + settings.partition_index,
                fault_kinds=settings.sensor_fault_kinds,
                drift_at=settings.drift_at,
            )
        self.model = build_device_model(self.spec, self.context.runtime)
        privacy = self.spec.privacy
        if privacy.secure_aggregation or privacy.seal_updates:
            # Imported only for private tasks: the cryptography stack is not needed otherwise.
            from fedchain.device.private import DevicePrivacy
        self.privacy: DevicePrivacy | None = (
            DevicePrivacy(
                self.task,
                self.ipfs,
                account,
                privacy,
                settings.poll_interval,
                drop_after_setup=settings.drop_after_setup,
                notifier=self.context.notifier,
                state_recheck=settings.state_recheck,
            )
            if privacy.secure_aggregation or privacy.seal_updates
            else None
        )
        self._follower: EventFollower | None = None

    @property
    def follower(self) -> EventFollower:
        if self._follower is None:
            self._follower = EventFollower(
                self.w3, self.task.address, self.task.abi, from_block=self.w3.eth.block_number
            )
        return self._follower

    @property
    def address(self) -> str:
        return self.account.address

    def ensure_registered(self) -> None:
        """Ask to join if not approved, then wait for the admin's approval; register the encryption key if the task
        is private."""
        self._ensure_approved()
        if self.privacy is not None and self.privacy.privacy.secure_aggregation:
            self.privacy.ensure_key()

    def _ensure_approved(self) -> None:
        if self.task.device_info(self.address).approved:
            return
        log.info("device %s is not approved: requesting to join", self.address)
        self.task.request_join()
        deadline = time.monotonic() + self.settings.join_timeout
        while not self.task.device_info(self.address).approved:
            if time.monotonic() > deadline:
                raise TimeoutError(f"device {self.address} was not approved within {self.settings.join_timeout:.0f}s")
            time.sleep(self.settings.poll_interval)
        log.info("device %s approved", self.address)

    def data_for_round(self, round_index: int) -> Dataset:
        """Everything that has arrived on the device by this round (online), or its whole partition; a streaming
        device: what its buffer holds now."""
        if self.sensor is not None:
            return self.sensor.data_now()
        return self.stream.seen(round_index - 1) if self.stream is not None else self.local_data

    def run(
        self,
        max_rounds: int | None = None,
        on_round: Callable[[RoundOutcome], None] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> int:
        """React to round events until the task ends; returns the number of rounds trained. `on_ready` is called
        once the device is registered and listening."""
        self.ensure_registered()
        _ = self.follower  # events from here on wake us
        if on_ready is not None:
            on_ready()
        trained = 0
        state = self.task.current_round()
        while state.phase not in (Phase.FINISHED, Phase.CANCELLED):
            if self.privacy is not None and state.phase in (Phase.AGGREGATING, Phase.REVEALING):
                self.privacy.after_round(state)
            if state.phase == Phase.OPEN and self._should_train(state):
                outcome = self.train_round(state)
                if outcome is not None:
                    trained += 1
                    if on_round is not None:
                        on_round(outcome)
                    if max_rounds is not None and trained >= max_rounds:
                        break
            self._wait_for_events()
            state = self.task.current_round()
        log.info("task %s is %s after %d rounds here", self.task.address, state.phase.name.lower(), trained)
        if self._owns_context:
            self.context.close()
        return trained

    def _should_train(self, state: RoundInfo) -> bool:
        if self.privacy is not None and self.privacy.sat_out(state.round):
            return False  # dropped out of this secure-aggregation round: wait for the next one
        info = self.task.device_info(self.address)
        if not info.approved:
            log.warning("device %s is no longer approved: stopping", self.address)
            raise PermissionError(f"device {self.address} was removed from task {self.task.address}")
        return info.last_round != state.round

    def _wait_for_events(self) -> None:
        """Block until the contract emits an event that concerns devices; re-read state now and then regardless."""
        deadline = time.monotonic() + self.settings.state_recheck
        while time.monotonic() < deadline:
            if any(e.name in WAKE_EVENTS for e in self.follower.poll()):
                return
            self.context.notifier.wait(deadline - time.monotonic())

    def train_update(self, state: RoundInfo) -> TrainedUpdate:
        """Fetch the round's global model and train on the data that has arrived (no upload, no transaction)."""
        round_index = state.round
        t0 = time.perf_counter()
        weights = self.context.global_weights(digest_to_cid(state.global_model_digest))
        data = self.data_for_round(round_index)
        started = time.perf_counter()
        local = train_for_round(
            self.model, weights, data, self.spec, round_index, self.address, self.proximal_mu, self.settings.attack
        )
        binding = UpdateBinding(self.context.chain_id, self.task.address, round_index, self.address)
        metadata = update_metadata(binding, len(data), local.train_seconds, local.loss)
        return TrainedUpdate(
            round_index, local.weights, weights, metadata, len(data), local.loss, local.train_seconds, started - t0
        )

    def encode(self, update: TrainedUpdate) -> bytes:
        """The bytes that go to IPFS: the update as safetensors, sealed to the aggregators' keys if the task says
        so."""
        if self.privacy is not None and self.privacy.privacy.seal_updates:
            return self.privacy.sealed_blob(update.round, update.weights, update.metadata)
        return encode_weights(update.weights, update.metadata)

    def upload(self, update: TrainedUpdate) -> str:
        """Put a plain or sealed update on IPFS; returns its CID."""
        return self.ipfs.add(self.encode(update))

    def train_round(self, state: RoundInfo) -> RoundOutcome | None:
        """Fetch the round's global model, train locally, upload the update and submit its digest."""
        round_index = state.round
        secure = self.privacy is not None and self.privacy.privacy.secure_aggregation
        # Secure aggregation: the setup first, while the round's setup window (its first half) is open.
        if secure and self.privacy.secagg_setup(state) is None:
            return None
        update = self.train_update(state)
        weights, trained, data_len = update.global_weights, update.weights, update.num_samples
        result_loss, train_seconds = update.loss, update.train_seconds
        t1 = time.perf_counter()
        if secure:
            private = self.privacy.secagg_submit(state, weights, trained, data_len)
            if private is None:
                return None
            log.info(
                "round %d: trained on %d samples (loss %.4f), masked update %s, gas %d, %.3f s of secure aggregation",
                round_index,
                data_len,
                result_loss,
                private.cid,
                private.gas_used,
                private.detail["secagg_seconds"],
            )
            return RoundOutcome(round_index, private.cid, data_len, result_loss, train_seconds, private.gas_used)
        cid = self.upload(update)
        t2 = time.perf_counter()
        try:
            tx = self.task.submit_update(round_index, cid_to_digest(cid), data_len)
        except ContractRevert as exc:
            if exc.error in ROUND_MOVED_ON:
                log.info("round %d closed before our update landed (%s)", round_index, exc.error)
                return None
            if exc.error == "NotApprovedDevice":  # removed while it trained: the same stop as between rounds
                log.warning("device %s was removed while training round %d: stopping", self.address, round_index)
                raise PermissionError(f"device {self.address} was removed from task {self.task.address}") from exc
            raise
        log.info(
            "round %d: trained on %d samples (loss %.4f), update %s, gas %d; seconds: fetch %.3f train %.3f "
            "upload %.3f submit %.3f",
            round_index,
            data_len,
            result_loss,
            cid,
            tx.gas_used,
            update.fetch_seconds,
            train_seconds,
            t2 - t1,
            time.perf_counter() - t2,
        )
        return RoundOutcome(round_index, cid, data_len, result_loss, train_seconds, tx.gas_used)
