"""fedchain: federated learning coordinated by Ethereum contracts, weights on IPFS."""

__version__ = "0.1.0"
