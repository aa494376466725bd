"""Sync: the device's outbox publisher, the wire protocol, and the central ingestion side."""

from sync.blobs import BlobTree
from sync.broker import LocalBroker
from sync.ingester import Ingester
from sync.mqtt import Credentials, SyncError, tls_context
from sync.outbox import BlobRef, OutboxItem, OutboxStore
from sync.publisher import Publisher
from sync.settings import SyncSettings, TlsSettings
from sync.store import CentralStore, open_store

__all__ = [
    "BlobRef",
    "BlobTree",
    "CentralStore",
    "Credentials",
    "Ingester",
    "LocalBroker",
    "OutboxItem",
    "OutboxStore",
    "Publisher",
    "SyncError",
    "SyncSettings",
    "TlsSettings",
    "open_store",
    "tls_context",
]
