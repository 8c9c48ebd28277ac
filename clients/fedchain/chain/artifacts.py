"""Compiled contract artifacts (ABI and bytecode) produced by `brownie compile`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fedchain.chain.errors import ArtifactMissing

ARTIFACTS_ENV = "FEDCHAIN_ARTIFACTS"


@dataclass(frozen=True)
class Artifact:
    """ABI and creation bytecode of one contract."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str


def artifacts_dir() -> Path:
    """Where artifacts live: $FEDCHAIN_ARTIFACTS, else the repository's build/contracts."""
    override = os.environ.get(ARTIFACTS_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[3] / "build" / "contracts"


@lru_cache(maxsize=8)
def load_artifact(name: str) -> Artifact:
    """Load one contract's artifact; a clear error says how to build it when missing."""
    path = artifacts_dir() / f"{name}.json"
    if not path.is_file():
        raise ArtifactMissing(f"no compiled artifact for {name} at {path}: run `make compile` (brownie compile)")
    data = json.loads(path.read_text())
    bytecode = data.get("bytecode") or ""
    if not bytecode:
        raise ArtifactMissing(f"artifact {path} has no bytecode")
    return Artifact(name=name, abi=data["abi"], bytecode=bytecode if bytecode.startswith("0x") else "0x" + bytecode)
