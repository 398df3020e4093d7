"""Frequent Sharing Protocols: versions loaded from ``policies/``, immutable, signed off by every party."""
