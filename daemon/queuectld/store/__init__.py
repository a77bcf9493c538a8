"""The job store: one interface in domain words, one SQL implementation, per-dialect differences."""

from __future__ import annotations

from queuectld.store.base import FinishedAttempt, LostAttempt, Store
from queuectld.store.open import open_store

__all__ = ["FinishedAttempt", "LostAttempt", "Store", "open_store"]
