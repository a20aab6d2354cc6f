"""Feast's HTTP feature server for one workspace: the command `make serve` runs, and a handle to run it.

The server is Feast's own (`feast serve`, gunicorn + uvicorn), started with the environment of the one
settings object so `feature_store.yaml` resolves to this workspace's registry and SQLite online store.
Three settings differ from Feast's defaults, all for latency:

- `--max-requests 0`: Feast's default recycles the worker every ~1,000 requests, and with one worker
  each recycle stalls lookups for ~2 s while the new worker boots (measured: two 2 s requests in 2,600).
  Recycling guards against leaks; `python -m scoring.bench_serving` reports the server's memory before
  and after its load instead, so a leak would show there.
- `--no-access-log`: one log line per request costs more than the SQLite read it logs.
- `PYTHONOPTIMIZE=1`: the server rebuilds the requested feature service from its registry proto on every
  request, and Feast's classes check their arguments with typeguard's `@typechecked` as they are built;
  those runtime checks were ~1.2 ms of a ~2.1 ms `ranking_v1` lookup. Optimized mode turns them (and
  `assert` statements) off; the serving tests run against the server started this way.

Published recommendations reach the server without a restart: `/get-online-features` reads SQLite on
every request, and only the registry (definitions, not values) is cached, refreshed every
`registry_ttl_sec` seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import requests

from scoring.settings import FEATURE_REPO, Settings

REGISTRY_TTL_SEC = 60


def feast_executable() -> str:
    """The `feast` CLI of this interpreter's environment (the project's virtualenv)."""
    return str(Path(sys.executable).with_name("feast"))


def serve_command(settings: Settings) -> list[str]:
    """`feast serve` on the host and port of the settings."""
    return [
        feast_executable(),
        "-c",
        str(FEATURE_REPO),
        "serve",
        "-h",
        settings.feast_host,
        "-p",
        str(settings.feast_port),
        "--registry_ttl_sec",
        str(REGISTRY_TTL_SEC),
        "--max-requests",
        "0",
        "--no-access-log",
    ]


def serve_environ(settings: Settings) -> dict[str, str]:
    """The server's environment: the workspace's paths, in optimized mode (see the module docstring)."""
    return {**os.environ, **settings.environ(), "PYTHONOPTIMIZE": "1"}


def exec_server(settings: Settings) -> None:
    """Replace this process with the feature server (`aisle serve`), so signals reach it directly."""
    command = serve_command(settings)
    os.execve(command[0], command, serve_environ(settings))


class FeatureServer:
    """A running `feast serve` subprocess, ready once `/health` answers; stopped on exit.

    Used by the serving tests and the benchmark, so both exercise exactly what `make serve` runs.
    """

    def __init__(self, settings: Settings, startup_timeout_s: float = 90.0) -> None:
        self.settings = settings
        self.url = f"http://{settings.feast_host}:{settings.feast_port}"
        self.log_path = settings.feast_dir / f"serve-{settings.feast_port}.log"
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> FeatureServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.settings.feast_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            # Its own session, so stop() can end gunicorn's master and worker together by group id.
            self.process = subprocess.Popen(
                serve_command(self.settings),
                env=serve_environ(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"feast serve exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(
            f"feast serve did not answer /health in {self.startup_timeout_s} s:\n{self.log_tail()}"
        )

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def memory_mb(self) -> float:
        """Resident memory of the server (gunicorn's master and its worker), from /proc (Linux)."""
        assert self.process is not None
        pids = [self.process.pid]
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids += [int(pid) for pid in children.read_text().split()]
        total_kb = 0
        for pid in pids:
            status = Path(f"/proc/{pid}/status").read_text()
            total_kb += int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
        return round(total_kb / 1024, 1)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL if it has not gone within 15 s."""
        if not self.running():
            return
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
