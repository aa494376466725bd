"""Sync: the device's outbox publisher, the wire protocol, and the central ingestion side."""

from sync.blobs import BlobTree
from sync.broker import LocalBroker
from sync.errors import StoreError, SyncError
from sync.ingester import Ingester
from sync.mqtt import Credentials, tls_context
from sync.outbox import BlobRef, OutboxChanges, OutboxItem, OutboxStore
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
    "OutboxChanges",
    "OutboxItem",
    "OutboxStore",
    "Publisher",
    "StoreError",
    "SyncError",
    "SyncSettings",
    "TlsSettings",
    "open_store",
    "tls_context",
]
