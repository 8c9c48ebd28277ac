"""The explorer's index of one chain: schema, ingest with reorg rollback, the projection of FederatedTask's events
into task tables, aggregation reports, and the follower thread. The names other modules use are exported here."""

from fedchain.explorer.index.follower import Follower
from fedchain.explorer.index.ingest import Indexer
from fedchain.explorer.index.records import (
    AGGREGATOR_ROLE,
    DEFAULT_ADMIN_ROLE,
    TASK_CONTRACT,
    Change,
    ContentSource,
    SyncStatus,
)
from fedchain.explorer.index.schema import connect_db

__all__ = [
    "AGGREGATOR_ROLE",
    "DEFAULT_ADMIN_ROLE",
    "TASK_CONTRACT",
    "Change",
    "ContentSource",
    "Follower",
    "Indexer",
    "SyncStatus",
    "connect_db",
]
