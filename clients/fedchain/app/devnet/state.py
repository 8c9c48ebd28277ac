"""The devnet's state file (JSON): where the chain and IPFS listen and which accounts are funded, for every other
command. It holds the devnet's well-known mnemonic, never a real key."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

CHAIN_IDS = {"ganache": 1337, "anvil": 31337}
DEFAULT_HOME = Path(os.environ.get("FEDCHAIN_HOME", ".fedchain"))
DEFAULT_STATE_FILE = DEFAULT_HOME / "devnet.json"


@dataclass
class DevnetState:
    """Where the devnet's services listen, and its funded accounts (addresses only)."""

    chain: str
    rpc_url: str
    chain_id: int
    ipfs_api: str
    accounts: list[str]
    mnemonic: str = field(default_factory=lambda: devnet_mnemonic())
    pids: dict[str, int] = field(default_factory=dict)
    workdir: str = ""

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path = DEFAULT_STATE_FILE) -> DevnetState:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no devnet state file at {path}: start one with `fedchain devnet`, or pass --rpc-url/--ipfs-api"
            ) from None


def devnet_mnemonic() -> str:
    from fedchain.chain.accounts import DEVNET_MNEMONIC  # imported late: eth_account takes a second

    return DEVNET_MNEMONIC
