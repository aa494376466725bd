"""Sync, the device's half of the wire: the protocol, the MQTT topic tree, the outbox contract and the publisher.

Both sides import this package (the central ingester speaks the same protocol), so it imports nothing
heavy and nothing of the central side. ``sync.files`` holds the crash-safe file helpers both sides use.
"""
