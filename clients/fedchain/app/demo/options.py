"""What a demo runs: `DemoOptions` (devices, rounds, chain, strategy, attacks, privacy, virtual devices), their
checks, the devnet accounts each role uses, and the robust strategies' defaults. Light: no torch, no web3."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from fedchain.learning.aggregation.registry import StrategySpec
from fedchain.learning.attacks import check_attack
from fedchain.learning.spec import PrivacySpec, TaskSpec, default_task_spec
from fedchain.privacy.accountant import noise_multiplier_for_chain

ADMIN_INDEX = 0
AGGREGATOR_INDEX = 1
FIRST_DEVICE_INDEX = 2
# Above this many devices the demo runs them as virtual devices in pools rather than one process each.
VIRTUAL_THRESHOLD = 20
# Devices a pool process takes before the demo adds another (up to one pool per core).
POOL_DEVICES = 250
# A pool that crashes more often than this is a bug, not bad luck: the demo stops.
MAX_POOL_RESTARTS = 3
# Seconds to wait for every device process or pool to be ready before round 1 opens.
READY_TIMEOUT = 300.0


@dataclass(frozen=True)
class DemoOptions:
    devices: int = 5
    rounds: int = 10
    chain: str = "ganache"
    non_iid: float | None = None
    online: bool = True
    # Wearable tasks: devices replay their recordings into a buffer of this many windows (0: off), at this speed.
    stream_buffer: int = 0
    stream_speed: float = 1.0
    workdir: Path = Path(".fedchain/demo")
    timeout: float = 900.0
    round_duration: int = 60
    spec: TaskSpec = field(default_factory=default_task_spec)
    explorer_port: int | None = None  # run `fedchain explorer` on this port for the whole demo
    strategy: StrategySpec = field(default_factory=StrategySpec)
    aggregators: int = 1
    threshold: int | None = None  # default: a strict majority of the aggregators
    lying_aggregators: int = 0  # evaluation: how many aggregators reveal corrupted models
    attackers: float = 0.0  # evaluation: fraction of devices that are Byzantine
    attack: str = "sign-flip-x10"
    aggregation_duration: int = 30
    secure_aggregation: bool = False
    seal_updates: bool = False
    dp_epsilon: float | None = None  # client-level DP with this ε budget (on chain) over the demo's rounds
    dp_clip_norm: float = 0.25
    dp_delta: float = 1e-5
    dropout: float = 0.0  # evaluation: fraction of devices that drop out of every round after their setup
    # Virtual devices (`fedchain pool`): many devices per process. None: automatic above VIRTUAL_THRESHOLD devices.
    virtual: bool | None = None
    pools: int | None = None  # pool processes (None: one per POOL_DEVICES devices, at most the machine's cores)
    # Virtual devices: "batch" (devices sign, each pool relays a round's updates in one transaction) or "direct"
    # (every device sends its own submitUpdate).
    submit: str = "batch"
    # The devnet keeps its chain on disk and restarts a crashed chain or IPFS service behind proxies that hold
    # requests meanwhile (see `Devnet(persist=...)`). Off by default: the proxies carry every request through this
    # process, and a demo's chain is thrown away at the end (IPFS is restarted either way).
    persist: bool = False
    # Fork the aggregator, device and pool processes from one that has imported torch and web3 once (forked.py),
    # and keep torch out of the demo's own process until the run is over; False starts each as a new interpreter.
    fork: bool = True
    # Where the initial model of a task spec is kept between demos (forked.initial_model_key), so the deployment
    # need not wait for torch; None: built every time.
    model_cache: Path | None = Path(".fedchain/cache")

    def use_virtual(self) -> bool:
        if self.virtual is not None:
            return self.virtual
        return self.pools is not None or self.devices > VIRTUAL_THRESHOLD

    def relayer_indices(self) -> list[int]:
        """Devnet accounts of the pools' relayers (after the devices' and the aggregators'), when they relay."""
        if not self.use_virtual() or self.submit != "batch":
            return []
        first = FIRST_DEVICE_INDEX + self.devices + self.aggregators - 1
        return [first + p for p in range(self.pool_count())]

    def pool_count(self) -> int:
        if self.pools is not None:
            return self.pools
        return max(1, min(os.cpu_count() or 1, -(-self.devices // POOL_DEVICES), self.devices))

    def dropout_count(self) -> int:
        return round(self.dropout * self.devices)

    def privacy_spec(self) -> PrivacySpec:
        """The task's privacy settings; the noise multiplier is the smallest that spends at most dp_epsilon over
        the demo's rounds with every round admitted by the contract's budget rule."""
        noise = 0.0
        if self.dp_epsilon is not None:
            noise = noise_multiplier_for_chain(self.dp_epsilon, self.dp_delta, self.rounds)
        return PrivacySpec(
            secure_aggregation=self.secure_aggregation,
            seal_updates=self.seal_updates,
            dp_clip_norm=self.dp_clip_norm if self.dp_epsilon is not None else 0.0,
            dp_noise_multiplier=noise,
            dp_delta=self.dp_delta,
        )

    def attacker_count(self) -> int:
        return round(self.attackers * self.devices)

    def aggregator_indices(self) -> list[int]:
        """Devnet account 1, then accounts after the devices'."""
        return [AGGREGATOR_INDEX] + [FIRST_DEVICE_INDEX + self.devices + j for j in range(self.aggregators - 1)]

    def check(self) -> None:
        if self.devices < 1 or self.rounds < 1:
            raise ValueError("need at least one device and one round")
        if self.aggregators < 1:
            raise ValueError("need at least one aggregator")
        # None is the deployment's default, a strict majority: always in range. The contract requires n/2 < k <= n.
        if self.threshold is not None and not self.aggregators // 2 < self.threshold <= self.aggregators:
            raise ValueError(
                f"the threshold must be a strict majority of the {self.aggregators} aggregators "
                f"({self.aggregators // 2 + 1} to {self.aggregators}), got {self.threshold}"
            )
        if not 0 <= self.lying_aggregators <= self.aggregators:
            raise ValueError(f"lying aggregators must be between 0 and {self.aggregators}")
        if not 0.0 <= self.attackers < 1.0:
            raise ValueError(f"the attacker fraction must be in [0, 1), got {self.attackers}")
        check_attack(self.attack)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"the dropout fraction must be in [0, 1), got {self.dropout}")
        if self.dropout > 0 and not self.secure_aggregation:
            raise ValueError("--dropout simulates devices dropping out of secure aggregation: add --secure-aggregation")
        if self.dp_epsilon is not None and not self.secure_aggregation:
            raise ValueError(
                "--dp-epsilon splits the noise among the devices, which only protects them under secure aggregation: "
                "add --secure-aggregation"
            )
        if self.dp_epsilon is not None and not self.dp_epsilon > 0:
            raise ValueError(f"--dp-epsilon must be > 0, got {self.dp_epsilon}")
        if self.stream_buffer < 0 or not self.stream_speed > 0:
            raise ValueError("--stream-buffer must be >= 0 and --stream-speed > 0")
        if self.stream_buffer and self.use_virtual():
            raise ValueError("--stream-buffer is for device processes: add --no-virtual")
        if self.use_virtual():
            if self.attacker_count() or self.secure_aggregation or self.dropout:
                raise ValueError(
                    "virtual devices run honest, non-secure-aggregation tasks only: drop --attackers, "
                    "--secure-aggregation and --dropout, or pass --no-virtual"
                )
            if self.submit not in ("batch", "direct"):
                raise ValueError(f"--submit must be batch or direct, got {self.submit!r}")
            if not 1 <= self.pool_count() <= self.devices:
                raise ValueError(f"--pools must be between 1 and the number of devices, got {self.pools}")
        if self.attacker_count() + self.dropout_count() > self.devices:
            raise ValueError("more attacking and dropping devices than devices")
        spec = replace(self.spec, privacy=self.privacy_spec(), strategy=self.strategy)
        if spec.privacy.secure_aggregation:
            survivors = self.devices - self.dropout_count()
            if survivors < spec.privacy.threshold_for(self.devices):
                raise ValueError(
                    f"{survivors} surviving devices cannot reach the secure-aggregation threshold "
                    f"{spec.privacy.threshold_for(self.devices)} of {self.devices}"
                )
            if spec.privacy.differential_privacy and survivors < spec.privacy.min_survivors_for(self.devices):
                raise ValueError(
                    f"{survivors} surviving devices carry less than the DP noise needs "
                    f"({spec.privacy.min_survivors_for(self.devices)})"
                )


def robust_defaults(strategy: StrategySpec, devices: int, attackers: int) -> StrategySpec:
    """Fill in the Byzantine bound a practitioner would configure when it was not given: f = the number of
    attackers for Krum and Multi-Krum (Bulyan: the most its n >= 4f + 3 allows), beta = their share for the
    trimmed mean. Explicit parameters are kept."""
    params = dict(strategy.params)
    given = strategy.params
    if attackers > 0 and strategy.name in ("krum", "multi-krum") and given.get("f", 1) == 1:
        params["f"] = max(1, min(attackers, (devices - 3) // 2))
    if attackers > 0 and strategy.name == "bulyan" and given.get("f", 1) == 1:
        params["f"] = max(1, min(attackers, (devices - 3) // 4))
    if attackers > 0 and strategy.name == "trimmed-mean" and given.get("beta", 0.1) == 0.1:
        params["beta"] = min(0.49, attackers / devices)
    return StrategySpec(strategy.name, params)
