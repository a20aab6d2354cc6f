"""One worker's published state, loaded at startup and swapped by a watcher when a publication changes.

`/search` (the search engine) and `/recommend` (the candidate pools) both serve what the last `make score`
or `make update` published, and both must pick up a new publication without a restart and without any
request paying for the check. This base holds that loop once: a daemon thread looks every
`search_reload_interval_s` seconds, a reload builds the new state aside and swaps it in one assignment (a
request running meanwhile finishes on the old one), and a publication that fails to load is logged once
and leaves the last good state serving, or, before any, a 503 that says why.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

from scoring.serving.request_body import RequestProblem
from scoring.settings import Settings

T = TypeVar("T")


class ReloadingService(ABC, Generic[T]):
    """A subclass says what it serves (`what`), how to load it, and how to tell that it changed.

    `current()` returns the state or raises a 503 RequestProblem; `start()` loads in this process (a
    worker) and starts the watcher; `stop()` ends it.
    """

    what = "the service"  # as the log and the reload thread name it: "search", "recommendations"
    unavailable = "the service is not available"  # how a 503 begins

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._value: T | None = None
        self._problem = f"{self.unavailable}: it is starting"
        self._failure = ""  # the last load failure logged, so a broken run is logged once, not every second
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._logger = logging.getLogger(f"aisle.serving.{self.what}")

    @abstractmethod
    def load(self) -> T:
        """Build the state of the published run from its files."""

    @abstractmethod
    def reloaded(self, value: T) -> T | None:
        """The state of a newly published run, or None while `value` is still the published one."""

    def describe(self, value: T) -> str:
        """What the log says was loaded."""
        return str(getattr(value, "run_id", "?"))

    def start(self) -> None:
        self._refresh()
        self._watcher = threading.Thread(target=self._watch, name=f"aisle-{self.what}-reload", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)

    def current(self) -> T:
        value = self._value
        if value is None:
            raise RequestProblem(503, self._problem)
        return value

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.search_reload_interval_s):
            self._refresh()

    def _refresh(self) -> None:
        """Load the state if there is none yet, else swap in a newly published one."""
        try:
            if self._value is not None:
                fresh = self.reloaded(self._value)
                if fresh is not None:
                    self._value = fresh
                    self._logger.info("%s reloaded: run %s", self.what, self.describe(fresh))
                self._failure = ""
                return
            if not (self.settings.runs_dir / "current").exists():
                self._problem = (
                    f"{self.unavailable} yet: no scoring run has been published in "
                    f"{self.settings.data_dir} (run `make score`); /get-online-features still answers"
                )
                return
            self._value = self.load()
            self._failure = ""
            self._logger.info("%s loaded: run %s", self.what, self.describe(self._value))
        except Exception as error:  # a broken publication must not take the worker (or its lookups) down
            failure = f"{type(error).__name__}: {error}"
            if self._value is None:
                self._problem = (
                    f"{self.unavailable}: the published run in {self.settings.runs_dir / 'current'} "
                    f"could not be loaded ({failure}); /get-online-features still answers"
                )
            if failure != self._failure:
                self._failure = failure
                self._logger.exception("loading %s failed (the last good state, if any, serves)", self.what)
