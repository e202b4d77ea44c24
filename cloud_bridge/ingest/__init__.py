"""Ingest: readings from the broker into the store, exactly once per (device_id, seq)."""
