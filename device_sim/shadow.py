"""Shadow runs on the device (docs/behaviour.md "Shadow runs"): the candidate a shadow release
put in the device's bucket is held beside the active model (device_sim/store.py, check 2.7 in
updater.py); every row the app scores with the active model is scored by the candidate too,
and what the two did together is kept in an agreement window. The candidate's answers never
reach the app. A window becomes one ``shadow`` report after ``report_rows`` rows or
``report_hours`` hours, or when the candidate is no longer held; only its counts leave the
device.

Bounded: the rank correlation is computed on the window's first RANK_PAIRS_MAX score pairs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from device_sim.errors import EngineError, ModelSyncError
from device_sim.store import Held, Store
from packager.manifest import format_time, parse_time

log = logging.getLogger("modelsync.device")
RANK_PAIRS_MAX = 2000


def _mean_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation, rounded to 6 decimals; None with fewer than two pairs or
    a side whose values are all equal (the correlation is undefined there)."""
    if len(a) < 2:
        return None
    ra, rb = _mean_ranks(np.asarray(a, dtype=np.float64)), _mean_ranks(np.asarray(b, dtype=np.float64))
    da, db = ra - ra.mean(), rb - rb.mean()
    va, vb = float((da * da).sum()), float((db * db).sum())
    if va == 0 or vb == 0:
        return None
    return round(float((da * db).sum()) / float(np.sqrt(va * vb)), 6)


@dataclass
class AgreementWindow:
    """One candidate beside one active version, from ``since`` on."""

    candidate: int
    active_version: int
    since: str
    rows: int = 0
    agree: int = 0
    active_anomalies: int = 0
    shadow_anomalies: int = 0
    active_scores: list[float] = field(default_factory=list)
    shadow_scores: list[float] = field(default_factory=list)

    def observe(self, active_labels: np.ndarray, active_scores: np.ndarray, shadow_labels: np.ndarray,
                shadow_scores: np.ndarray) -> None:
        self.rows += int(active_labels.shape[0])
        self.agree += int((active_labels == shadow_labels).sum())
        self.active_anomalies += int((active_labels == -1).sum())
        self.shadow_anomalies += int((shadow_labels == -1).sum())
        room = RANK_PAIRS_MAX - len(self.active_scores)
        if room > 0:
            self.active_scores += active_scores[:room].astype(np.float64).tolist()
            self.shadow_scores += shadow_scores[:room].astype(np.float64).tolist()

    def report(self) -> dict[str, Any]:
        """The ``data`` of a ``shadow`` report (docs/protocol.md)."""
        return {
            "since": self.since, "active_version": self.active_version, "rows": self.rows,
            "agree": self.agree,
            "active_anomalies": self.active_anomalies, "shadow_anomalies": self.shadow_anomalies,
            "rank_pairs": len(self.active_scores),
            "rank_correlation": spearman(np.asarray(self.active_scores), np.asarray(self.shadow_scores)),
        }


class ShadowRunner:
    """The device's held candidates at work: ``observe`` after each active prediction,
    ``queue_due`` before a sync, ``settle`` after it (the held set may have changed)."""

    def __init__(self, store: Store, now: Any) -> None:
        self.store = store
        self.now = now
        self._held: dict[str, tuple[Held, Any] | None] = {}  # name → (held, engine); None: none usable
        self._windows: dict[str, AgreementWindow] = {}

    def _candidate(self, name: str) -> tuple[Held, Any] | None:
        if name not in self._held:
            self._held[name] = self._load(name)
        return self._held[name]

    def _load(self, name: str) -> tuple[Held, Any] | None:
        from device_sim.engine import engine_for_installed

        held = self.store.held_shadow(name)
        if held is None:
            return None
        try:
            engine = engine_for_installed(self.store.held_manifest(held), held.inst.artifact_sha256,
                                          self.store.held_files(held)[1])
        except (OSError, ValueError, KeyError, StopIteration, ModelSyncError) as exc:
            log.warning("held shadow %s v%s does not load, not run: %s", name, held.inst.version, exc)
            return None
        return held, engine

    def observe(self, name: str, active_version: int, features: Any, active: Any) -> None:
        """Score the same rows with the held candidate; its answers go into the window only."""
        found = self._candidate(name)
        if found is None:
            return
        held, engine = found
        try:
            shadow = engine.predict(features)
        except EngineError as exc:  # the active answer stands whatever the candidate does
            log.warning("held shadow %s v%s failed to score: %s", name, held.inst.version, exc)
            return
        window = self._windows.get(name)
        if window is not None and (window.candidate, window.active_version) != (held.inst.version,
                                                                                active_version):
            self._emit(name)
            window = None
        if window is None:
            window = self._windows[name] = AgreementWindow(held.inst.version, active_version,
                                                           format_time(self.now()))
        window.observe(active.labels, active.scores, shadow.labels, shadow.scores)
        if window.rows >= held.report_rows:
            self._emit(name)

    def _emit(self, name: str) -> None:
        window = self._windows.pop(name, None)
        if window is not None and window.rows:
            self.store.enqueue("shadow", model=name, version=window.candidate, data=window.report())

    def queue_due(self) -> None:
        """Windows whose hours are up become reports (rows are checked as they come)."""
        moment: datetime = self.now()
        for name, window in list(self._windows.items()):
            # from the store: settle() empties the engine cache, and a window must not fall due
            # early because no row was scored since the last sync
            held = self.store.held_shadow(name)
            elapsed = (moment - parse_time(window.since)).total_seconds()
            if held is None or elapsed >= held.report_hours * 3600:
                self._emit(name)

    def settle(self) -> None:
        """After a sync: a window whose candidate is no longer held (dropped, promoted, or
        replaced by another) is reported now; candidates are looked up afresh."""
        self._held.clear()
        for name, window in list(self._windows.items()):
            held = self.store.held_shadow(name)
            if held is None or held.inst.version != window.candidate:
                self._emit(name)
