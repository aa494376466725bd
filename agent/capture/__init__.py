"""Capture: one supervised thread per device, the host clock, capture policies and triggers.

``streams`` runs each driver on its own thread, ``recorder`` applies the stream's capture policy,
``recording`` wires time, sessions, triggers and recorders for one process.
"""
