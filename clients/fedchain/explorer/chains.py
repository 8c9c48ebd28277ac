"""Names and public block explorers of well-known chains (links out; nothing is loaded from them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChainInfo:
    name: str
    explorer: str | None = None  # base URL: {explorer}/tx/HASH, /address/ADDR, /block/N


KNOWN_CHAINS: dict[int, ChainInfo] = {
    1: ChainInfo("Ethereum mainnet", "https://etherscan.io"),
    11155111: ChainInfo("Sepolia", "https://sepolia.etherscan.io"),
    17000: ChainInfo("Holesky", "https://holesky.etherscan.io"),
    560048: ChainInfo("Hoodi", "https://hoodi.etherscan.io"),
    10: ChainInfo("OP mainnet", "https://optimistic.etherscan.io"),
    11155420: ChainInfo("OP Sepolia", "https://sepolia-optimism.etherscan.io"),
    42161: ChainInfo("Arbitrum One", "https://arbiscan.io"),
    421614: ChainInfo("Arbitrum Sepolia", "https://sepolia.arbiscan.io"),
    8453: ChainInfo("Base", "https://basescan.org"),
    84532: ChainInfo("Base Sepolia", "https://sepolia.basescan.org"),
    137: ChainInfo("Polygon PoS", "https://polygonscan.com"),
    80002: ChainInfo("Polygon Amoy", "https://amoy.polygonscan.com"),
    100: ChainInfo("Gnosis", "https://gnosisscan.io"),
    1337: ChainInfo("local devnet (Ganache)"),
    31337: ChainInfo("local devnet (Anvil)"),
}


def chain_info(chain_id: int) -> ChainInfo:
    return KNOWN_CHAINS.get(chain_id, ChainInfo(f"chain {chain_id}"))


def explorer_link(chain_id: int, kind: str, value: str | int) -> str | None:
    """Link to the chain's public explorer for a tx, address or block; None on devnets and unknown chains."""
    base = chain_info(chain_id).explorer
    if base is None or kind not in ("tx", "address", "block"):
        return None
    return f"{base}/{kind}/{value}"
