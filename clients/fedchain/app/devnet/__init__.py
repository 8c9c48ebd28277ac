"""A local development network: Ganache or Anvil plus the embedded IPFS service, as supervised child processes.

`network` (the `Devnet` that starts and restarts them), `state` (the state file every other command reads),
`commands` (the services' command lines, funding accounts), `processes` (ports, spawning, stopping, leftovers),
`anvil` (Anvil's snapshots and journal of writes), `proxy` (proxies that hold requests while a service restarts),
`restart` (how often a service may be restarted).

The names below are loaded on first use (PEP 562): importing the package imports none of its modules, and none of
them imports web3 (a restarted devnet's proxies must listen at once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedchain._lazy import lazy_exports

if TYPE_CHECKING:
    from fedchain.app.devnet.commands import (
        ACCOUNT_BALANCE_WEI,
        NODE_ACCOUNTS,
        chain_command,
        fund_accounts,
        ipfs_command,
        node_bin,
    )
    from fedchain.app.devnet.network import SERVICES_FILE, Devnet
    from fedchain.app.devnet.processes import free_port, terminate
    from fedchain.app.devnet.restart import RestartPolicy
    from fedchain.app.devnet.state import CHAIN_IDS, DEFAULT_STATE_FILE, DevnetState

_SOURCES = {
    "fedchain.app.devnet.commands": (
        "ACCOUNT_BALANCE_WEI",
        "NODE_ACCOUNTS",
        "chain_command",
        "fund_accounts",
        "ipfs_command",
        "node_bin",
    ),
    "fedchain.app.devnet.network": ("SERVICES_FILE", "Devnet"),
    "fedchain.app.devnet.processes": ("free_port", "terminate"),
    "fedchain.app.devnet.restart": ("RestartPolicy",),
    "fedchain.app.devnet.state": ("CHAIN_IDS", "DEFAULT_STATE_FILE", "DevnetState"),
}
__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)
__all__ = [
    "ACCOUNT_BALANCE_WEI",
    "CHAIN_IDS",
    "DEFAULT_STATE_FILE",
    "NODE_ACCOUNTS",
    "SERVICES_FILE",
    "Devnet",
    "DevnetState",
    "RestartPolicy",
    "chain_command",
    "free_port",
    "fund_accounts",
    "ipfs_command",
    "node_bin",
    "terminate",
]
