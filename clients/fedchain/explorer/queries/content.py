"""The IPFS content page: what a CID holds (JSON, safetensors weights or bytes), verified against the CID by the
storage client, where the index references it, and an in-memory cache of what was fetched."""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from typing import Any

from fedchain.explorer.queries.base import BadInput, NotFound, Reader
from fedchain.storage import StorageError, cid_to_digest
from fedchain.storage.codec import decode_weights, read_metadata

MAX_CONTENT_BYTES = 64 << 20
CACHED_CONTENTS = 256


class ContentCache:
    """Fetched contents by CID, the oldest dropped first; shared by request threads. Content behind a CID never
    changes, so an entry is never stale; failed fetches are not kept."""

    def __init__(self, size: int = CACHED_CONTENTS) -> None:
        self.size = size
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, cid: str) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get(cid)

    def put(self, cid: str, content: dict[str, Any]) -> None:
        with self._lock:
            self._items[cid] = content
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class ContentPages:
    def __init__(self, reader: Reader) -> None:
        self.r = reader
        self.cache = ContentCache()

    def cid_references(self, cid: str) -> list[dict[str, Any]]:
        """Where the index mentions a CID: a task's spec or models, a round's model or report, an update."""
        refs: list[dict[str, Any]] = []
        for t in self.r.rows(
            "SELECT address, model_spec_cid, initial_model_cid, final_model_cid FROM tasks WHERE model_spec_cid = ? "
            "OR initial_model_cid = ? OR final_model_cid = ?",
            cid,
            cid,
            cid,
        ):
            for field, what in (
                ("model_spec_cid", "model and training description"),
                ("initial_model_cid", "initial model"),
                ("final_model_cid", "final model"),
            ):
                if t[field] == cid:
                    refs.append({"kind": field.removesuffix("_cid"), "what": what, "task": t["address"], "round": None})
        for r in self.r.rows(
            "SELECT task, round, model_cid, report_cid, global_model_cid FROM rounds WHERE model_cid = ? "
            "OR report_cid = ? OR global_model_cid = ? ORDER BY task, round",
            cid,
            cid,
            cid,
        ):
            if r["model_cid"] == cid:
                refs.append({"kind": "aggregate", "what": "aggregated model", "task": r["task"], "round": r["round"]})
            if r["report_cid"] == cid:
                refs.append({"kind": "report", "what": "aggregation report", "task": r["task"], "round": r["round"]})
            if r["global_model_cid"] == cid:
                refs.append(
                    {
                        "kind": "global_model",
                        "what": "global model the round started from",
                        "task": r["task"],
                        "round": r["round"],
                    }
                )
        for u in self.r.rows("SELECT task, round, device, tx_hash FROM updates WHERE cid = ?", cid):
            refs.append({"kind": "update", "what": "device update", **u})
        for a in self.r.rows(
            "SELECT task, round, aggregator, model_cid, report_cid, reveal_tx FROM round_aggregators "
            "WHERE model_cid = ? UNION SELECT task, round, aggregator, model_cid, report_cid, reveal_tx "
            "FROM round_aggregators WHERE report_cid = ? ORDER BY task, round, aggregator",
            cid,
            cid,
        ):
            for field, kind, what in (
                ("model_cid", "revealed_model", "model revealed by aggregator"),
                ("report_cid", "revealed_report", "aggregation report revealed by aggregator"),
            ):
                if a[field] == cid:
                    refs.append(
                        {
                            "kind": kind,
                            "what": what,
                            "task": a["task"],
                            "round": a["round"],
                            "aggregator": a["aggregator"],
                            "tx_hash": a["reveal_tx"],
                        }
                    )
        for r in self.r.rows("SELECT task, round FROM rounds WHERE server_state_cid = ?", cid):
            refs.append({"kind": "server_state", "what": "strategy's server state after", **r})
        return refs

    def content(self, cid: str) -> dict[str, Any]:
        """What a CID holds (JSON, safetensors weights or bytes), verified against the CID; cached."""
        try:
            digest = cid_to_digest(cid)
        except StorageError as exc:
            raise BadInput(str(exc)) from None
        refs = self.cid_references(cid)
        cached = self.cache.get(cid)
        if cached is None:
            cached = self._fetch_content(cid, bool(refs))
            if cached.get("error") is None:
                self.cache.put(cid, cached)
        return {"cid": cid, "digest": "0x" + digest.hex(), "references": refs, **cached}

    def raw_content(self, cid: str) -> bytes:
        try:
            cid_to_digest(cid)
        except StorageError as exc:
            raise BadInput(str(exc)) from None
        if self.r.ipfs is None:
            raise NotFound("no IPFS API configured")
        try:
            return self.r.ipfs.cat(cid, max_size=MAX_CONTENT_BYTES)
        except StorageError as exc:
            raise NotFound(f"cannot fetch {cid} from the IPFS node: {exc}") from exc

    def _fetch_content(self, cid: str, referenced: bool) -> dict[str, Any]:
        if self.r.ipfs is None:
            return {"error": "no IPFS API configured", "type": None}
        try:
            data = self.r.ipfs.cat(cid, max_size=MAX_CONTENT_BYTES)
        except StorageError as exc:
            if not referenced:
                raise NotFound(
                    f"{cid} is not referenced by any indexed task and the IPFS node cannot provide it: {exc}"
                ) from exc
            return {"error": f"the IPFS node cannot provide it: {exc}", "type": None, "size": None}
        out: dict[str, Any] = {"size": len(data), "verified": True, "error": None}
        try:
            body = json.loads(data)
            text = json.dumps(body, indent=2, sort_keys=True)
            out.update(type="json", json=body if len(text) < 200_000 else None, text=text[:200_000])
            return out
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
        try:
            metadata = read_metadata(data, max_bytes=MAX_CONTENT_BYTES)
            weights = decode_weights(data, max_bytes=MAX_CONTENT_BYTES)
            tensors = [
                {
                    "name": name,
                    "dtype": str(arr.dtype),
                    "shape": list(arr.shape),
                    "parameters": int(arr.size),
                    "l2_norm": float(math.sqrt(float((arr.astype("float64") ** 2).sum()))) if arr.size else 0.0,
                }
                for name, arr in sorted(weights.items())
            ]
            out.update(
                type="safetensors",
                metadata=metadata,
                tensors=tensors,
                parameters=sum(t["parameters"] for t in tensors),
            )
            return out
        except Exception:  # neither JSON nor safetensors: show the first bytes
            out.update(type="bytes", preview_hex=data[:256].hex())
            return out
