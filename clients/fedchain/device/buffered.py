"""One device of an asynchronous buffered task (FedBuff, contracts/BufferedTask.sol).

No rounds to wait for: whenever it is ready the device fetches the latest published version, trains from it,
uploads the update and submits it tagged with that version. The update file is bound (storage.binding) to (chain,
task, that base version, device): the `round` of the binding is the base version, which the aggregator checks
against the entry the chain recorded. The chain decides whether it still counts; a refusal is
a documented outcome, never a crash (`after_refusal`):

- TooStale / UnknownVersion: the update lags too far behind (or names a version this node has not seen): dropped,
  the device retrains from the latest version.
- BuffersFull: one buffer is being aggregated and the next is already full: keep the update, wait for a buffer to
  open or a version to be published, submit it again (if it has meanwhile become too stale, the chain says so).
- AlreadyBuffered: the device's previous update is in the filling buffer: keep this one for the next buffer.
- TaskNotRunning: the task finished or was cancelled: stop. NotApprovedDevice: removed: stop (PermissionError).

Data: the device's static share of the task's dataset, or (`stream`, wearable tasks) its sensor's stream
(fedchain.device.sensor, the same code as the synchronous streaming device): recordings replayed at k x real time
into a bounded buffer of recent windows; the device trains on what the buffer holds once `stream.min_new` new
windows arrived since its previous training (the asynchronous mode's natural case: it submits whenever it is ready).
Faulty windows (NaN samples, wrong length or sampling rate) are refused in the device's log and the run goes on.

For experiments a device can be made slow (`speed_factor`: each local training takes that many times as long) or
sleepy (after its n-th training it sleeps, holding its update, before submitting), as battery-powered wearables are.

The pieces a pool of virtual buffered devices reuses (fedchain.device.buffered_pool): `BufferedContext` (what the
devices of one process share) and the runner's `train_update` (train and upload, no waiting) and `submit`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from eth_account.signers.local import LocalAccount
from web3 import Web3

from fedchain.chain import ContractRevert, EventFollower, connect
from fedchain.chain.artifacts import load_artifact
from fedchain.chain.buffered import CONTRACT_NAME, BufferedConfig, BufferedTaskClient, Status
from fedchain.chain.notify import EventNotifier
from fedchain.device.runner import build_device_model, resolve_runtime, train_for_round, update_metadata
from fedchain.device.schedule import DeviceTiming, simulated_seconds  # noqa: F401 (simulated_seconds: re-exported)
from fedchain.learning.data import Dataset, device_partition, load_dataset
from fedchain.learning.spec import TaskSpec
from fedchain.learning.types import Weights
from fedchain.storage import IpfsClient, cid_to_digest, digest_to_cid
from fedchain.storage.binding import UpdateBinding
from fedchain.storage.codec import encode_weights

if TYPE_CHECKING:
    from fedchain.device.sensor import StreamSettings

log = logging.getLogger("fedchain.device.buffered")

# Events after which a waiting device looks again: a buffer opened, a version was published, the task ended.
WAKE_EVENTS = {"BufferOpened", "VersionPublished", "BufferDiscarded", "TaskFinished", "TaskCancelled", "TaskStarted"}


class Next(Enum):
    """What a device does after the chain refused its update."""

    RETRAIN = "retrain from the latest version"
    WAIT_AND_RESUBMIT = "keep the update and submit it again once a buffer opens"
    STOP = "stop"


REFUSALS: dict[str, Next] = {
    "TooStale": Next.RETRAIN,
    "UnknownVersion": Next.RETRAIN,
    "BuffersFull": Next.WAIT_AND_RESUBMIT,
    "AlreadyBuffered": Next.WAIT_AND_RESUBMIT,
    "TaskNotRunning": Next.STOP,
    "NotApprovedDevice": Next.STOP,
}


def after_refusal(error: str) -> Next:
    """The device's next step after `submitUpdate` reverted with `error`; ValueError for a revert that says the
    device itself is broken (EmptyDigest, ZeroSamples, TooManySamples...), which retrying cannot fix."""
    try:
        return REFUSALS[error]
    except KeyError:
        name = error or "an unknown error"
        raise ValueError(f"submitUpdate refused with {name}: not a buffered-task outcome") from None


@dataclass(frozen=True)
class BufferedDeviceSettings:
    task_address: str
    rpc_url: str
    ipfs_api: str
    partition_index: int = 0
    num_partitions: int = 1
    non_iid_alpha: float | None = None
    data_seed: int = 0
    poll_interval: float = 0.25
    state_recheck: float = 2.0
    push: bool = True
    # Simulation of heterogeneous devices (see the module's notes).
    speed_factor: float = 1.0
    min_train_seconds: float = 0.0
    sleep_after: int | None = None  # sleep after training this many updates (1-based), holding the last one
    sleep_seconds: float = 0.0
    stream: StreamSettings | None = None  # train on a sensor stream instead of the whole share (wearable tasks)
    # fedchain.device.runner.RUNTIMES: torch, light (numpy only) or auto (torch where it is installed)
    runtime: str = "auto"

    def timing(self) -> DeviceTiming:
        return DeviceTiming(self.speed_factor, self.min_train_seconds, self.sleep_seconds, self.sleep_after)


@dataclass
class BufferedContext:
    """What the buffered devices of one process share: one chain connection, one IPFS client, the task's
    configuration, description and dataset, one event subscription, and the latest version's model."""

    w3: Web3
    chain_id: int
    reader: BufferedTaskClient
    ipfs: IpfsClient
    config: BufferedConfig
    spec: TaskSpec
    proximal_mu: float
    train: Dataset
    follower: EventFollower
    history: EventFollower
    notifier: EventNotifier
    _models: dict[int, Weights] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: BufferedDeviceSettings) -> BufferedContext:
        w3 = connect(settings.rpc_url, wait=30)
        reader = BufferedTaskClient(w3, settings.task_address)
        ipfs = IpfsClient(settings.ipfs_api)
        config = reader.config()
        spec = TaskSpec.from_json(ipfs.cat(digest_to_cid(config.model_spec_digest), max_size=1 << 20))
        strategy = spec.strategy_spec()
        proximal_mu = float(strategy.params["mu"]) if strategy.name == "fedprox" else 0.0
        train, _ = load_dataset(spec.dataset)
        abi = load_artifact(CONTRACT_NAME).abi
        follower = EventFollower(w3, reader.address, abi, from_block=w3.eth.block_number)
        history = EventFollower(w3, reader.address, abi)
        notifier = EventNotifier(
            settings.rpc_url, [reader.address], poll_interval=settings.poll_interval, push=settings.push
        )
        chain_id = int(w3.eth.chain_id)
        return cls(w3, chain_id, reader, ipfs, config, spec, proximal_mu, train, follower, history, notifier)

    def global_weights(self, version: int) -> Weights:
        """The model of `version`, fetched once per process (only the latest is trained from)."""
        if version not in self._models:
            cid = digest_to_cid(self.reader.version_digest(version))
            self._models = {version: self.ipfs.get_weights(cid)}
        return self._models[version]

    def close(self) -> None:
        self.notifier.close()


@dataclass(frozen=True)
class HeldUpdate:
    """A trained, uploaded update not yet accepted by the chain."""

    base_version: int
    cid: str
    num_samples: int
    loss: float
    train_seconds: float = 0.0  # the real local training's


@dataclass(frozen=True)
class AcceptedUpdate:
    base_version: int
    buffer: int
    staleness: int
    cid: str
    gas_used: int


class BufferedDeviceRunner:
    """Trains and submits until the task ends (or `max_updates` updates were accepted)."""

    def __init__(
        self,
        settings: BufferedDeviceSettings,
        account: LocalAccount,
        context: BufferedContext | None = None,
        timing: DeviceTiming | None = None,
    ) -> None:
        self.settings = settings
        self.account = account
        self._owns_context = context is None
        self.context = context if context is not None else BufferedContext.open(settings)
        self.timing = timing if timing is not None else settings.timing()
        self.w3 = self.context.w3
        self.chain_id = self.context.chain_id
        self.task = BufferedTaskClient.for_account(self.w3, settings.task_address, account)
        self.ipfs = self.context.ipfs
        self.config = self.context.config
        self.spec = self.context.spec
        self.proximal_mu = self.context.proximal_mu
        train = self.context.train
        self.data = device_partition(
            train, settings.partition_index, settings.num_partitions, settings.non_iid_alpha, settings.data_seed
        )
        self.data_source = self._data_source()
        self.runtime = resolve_runtime(settings.runtime)
        self.model = build_device_model(self.spec, self.runtime)
        if self._owns_context:  # one line per process, as the synchronous device logs it
            log.info("training runtime: %s", "light (numpy only)" if self.runtime == "light" else "torch")
        self.follower = self.context.follower
        self._history = self.context.history
        self.notifier = self.context.notifier
        self.trained = 0  # local trainings so far (also seeds them: a retrain differs from the refused one)

    @property
    def address(self) -> str:
        return self.account.address

    def _data_source(self) -> Callable[[], Dataset]:
        """What each local training trains on: the whole share, or what the sensor's buffer holds when ready."""
        stream = self.settings.stream
        if stream is None:
            return lambda: self.data
        from fedchain.device.sensor import DeviceSensor  # streaming devices only, as in the synchronous runner

        seed = self.settings.data_seed + self.settings.partition_index
        sensor = DeviceSensor.from_settings(self.spec, self.data, stream, seed=seed)
        return lambda: sensor.data_when_ready(stream.min_new)

    def run(self, max_updates: int | None = None, on_accepted: Callable[[AcceptedUpdate], None] | None = None) -> int:
        """Train and submit until the task finishes or is cancelled; returns the updates the chain accepted."""
        if not self.task.device_approved(self.address):
            raise PermissionError(f"device {self.address} is not approved on task {self.task.address}")
        accepted = 0
        held: HeldUpdate | None = None
        try:
            while True:
                filling = self.task.filling_buffer()
                if filling.status == Status.REGISTERING:
                    self._wait_for_events()
                    continue
                if filling.status != Status.RUNNING:
                    break
                if held is None:
                    held = self._train(filling.version)
                outcome = self.submit(held)
                if isinstance(outcome, AcceptedUpdate):
                    held = None
                    accepted += 1
                    if on_accepted is not None:
                        on_accepted(outcome)
                    if max_updates is not None and accepted >= max_updates:
                        break
                elif outcome is Next.RETRAIN:
                    held = None
                elif outcome is Next.WAIT_AND_RESUBMIT:
                    self._wait_for_events()
                else:
                    break
        finally:
            if self._owns_context:
                self.context.close()
        status = self.task.filling_buffer().status
        log.info("task %s is %s; %d updates of this device accepted", self.task.address, status.name.lower(), accepted)
        return accepted

    def _train(self, version: int) -> HeldUpdate:
        """Train from `version`, take as long as this device's speed says, maybe fall asleep, upload."""
        held, seconds = self.train_update(version)
        extra = seconds - held.train_seconds
        if extra > 0:
            time.sleep(extra)
        nap = self.timing.nap_seconds(self.trained)
        if nap > 0:
            log.info("sleeping %.0fs before submitting (as a wearable would)", nap)
            time.sleep(nap)
        return held

    def train_update(self, version: int) -> tuple[HeldUpdate, float]:
        """Train from `version` and upload the update, without waiting; returns it with the seconds the training
        lasts on this device (the real training stretched to the device's speed, not counting a nap)."""
        data = self.data_source()
        if self.settings.stream is not None:  # waiting for new windows may have taken a while: train from the latest
            version = max(version, self.task.current_version())
        weights = self.context.global_weights(version)
        self.trained += 1
        local = train_for_round(self.model, weights, data, self.spec, self.trained, self.address, self.proximal_mu)
        extra = self.timing.extra_seconds(local.train_seconds)
        binding = UpdateBinding(self.chain_id, self.task.address, version, self.address)
        metadata = update_metadata(binding, len(data), local.train_seconds + extra, local.loss)
        cid = self.ipfs.add(encode_weights(local.weights, metadata))
        log.info(
            "trained update %d from version %d on %d samples (loss %.4f) in %.2fs: %s",
            self.trained,
            version,
            len(data),
            local.loss,
            local.train_seconds + extra,
            cid,
        )
        return HeldUpdate(version, cid, len(data), local.loss, local.train_seconds), local.train_seconds + extra

    def submit(self, held: HeldUpdate) -> AcceptedUpdate | Next:
        """Submit `held`: the chain's record of it, or the device's next step after a refusal."""
        try:
            tx = self.task.submit_update(held.base_version, cid_to_digest(held.cid), held.num_samples)
        except ContractRevert as exc:
            step = after_refusal(exc.error)
            log.warning(
                "update trained from version %d refused by the chain: %s; %s", held.base_version, exc, step.value
            )
            if exc.error == "NotApprovedDevice":
                raise PermissionError(f"device {self.address} was removed from task {self.task.address}") from exc
            return step
        events = list(
            self._history.history(
                "UpdateBuffered", from_block=tx.block_number, to_block=tx.block_number, device=self.address
            )
        )
        buffer = int(events[-1].args["buffer"]) if events else 0
        staleness = int(events[-1].args["staleness"]) if events else -1
        log.info(
            "update from version %d accepted into buffer %d at staleness %d (gas %d)",
            held.base_version,
            buffer,
            staleness,
            tx.gas_used,
        )
        return AcceptedUpdate(held.base_version, buffer, staleness, held.cid, tx.gas_used)

    def _wait_for_events(self) -> None:
        deadline = time.monotonic() + self.settings.state_recheck
        while time.monotonic() < deadline:
            if any(e.name in WAKE_EVENTS for e in self.follower.poll()):
                return
            self.notifier.wait(deadline - time.monotonic())
