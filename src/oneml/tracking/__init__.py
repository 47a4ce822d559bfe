"""Tracking: every run is an MLflow run. See `store.py` (where) and `system.py` (what every run records)."""

from oneml.tracking.store import RunRecorder, list_runs, resolve_tracking_uri

__all__ = ["RunRecorder", "list_runs", "resolve_tracking_uri"]
