"""Simulated twins of every device class: selectable like real drivers, real-time paced, seeded,
and carrying ground truth in ``Sample.meta`` so that timing and alignment can be verified."""
