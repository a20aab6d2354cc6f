"""Feast's HTTP feature server for one workspace, with Aisle's product search on the same port, read-only
unless a token unlocks it: what `make serve` runs (`python -m scoring.serving.server`), and a handle to
run it.

The application is Feast's own FastAPI app (`feast.feature_server.get_app`, the one `feast serve` runs),
under the same server `feast serve` uses (gunicorn with uvicorn workers), with the environment of the
one settings object so `feature_store.yaml` resolves to this workspace's registry and SQLite online
store. It is bound to `settings.feast_host` (loopback by default). Five things are added to it:

- `POST /get-online-features` runs Feast's own lookup (its request model, registry cache, permission
  check, online read and JSON conversion) on the worker's event loop instead of through three thread-pool
  hand-offs, which cost more than the lookup under concurrent load (scoring/serving/lookup_route.py).

- `POST /search`, Aisle's product search (scoring/serving/search_route.py: its request checks, statuses,
  and the engine each worker loads and reloads), added to Feast's app in place of Feast's own `/search`.

- `POST /events` and `POST /recommend`, the real-time path (scoring/serving/recommend_route.py): an event
  merged into the shopper's session row and pushed through Feast's push source `session_activity_push`,
  and the published candidates re-ranked with that session; the state each worker loads and reloads.

- `ServingGuard`, a thin ASGI middleware in front of the app. Only an allow-list of routes reaches
  Feast, so a route a later Feast adds is closed until it is listed here:
  - read routes, open to every caller: `GET /health`, `POST /get-online-features`, `POST /search` and
    `POST /recommend`.
    Feast's other reads (`/retrieve-online-documents`, `/v1/vector_stores...`, and its vector `/search`,
    which Aisle's replaces) need vector-indexed views, which Aisle does not define, so they could only
    fail; they, `/chat`, `/ws/chat`, `/static`, `/docs` and `/openapi.json` (which would advertise the
    closed routes) answer 404.
  - write routes (`/events`, `/write-to-online-store`, `/push`, `/materialize`,
    `/materialize-incremental`): 403 while `settings.serve_token` is empty (the default: the server is
    read-only, whatever token a caller sends), else 401 unless the request carries
    `Authorization: Bearer <serve_token>`, compared in constant time (`hmac.compare_digest`). A refused
    write never reaches Feast, so it changes nothing.
  - caps: a body larger than `settings.max_request_bytes` is refused with 413, by its Content-Length or,
    without one (chunked), by counting the bytes as they arrive; a lookup with more than
    `settings.max_entities_per_request` entity rows is refused with 413. Both messages name the cap.
  - a lookup body Feast would fail on with a 500 is answered 422 before Feast sees it: not JSON, NaN or
    Infinity (Python's parser accepts them, JSON does not), `entities` not an object of equally long,
    non-empty lists of strings or integers, an empty `feature_service`, or neither a service nor
    feature references.
- Error answers in one shape, `{"detail": ...}`: Feast's own errors keep their status (404 for an unknown
  feature service or view) with Feast's message and class; the ValueError, KeyError and TypeError
  Feast raises for a request it cannot answer as given (a join key missing, an unknown feature of a
  known view, a write with a malformed frame) are 422 instead of 500; anything else stays 500.

Why not Feast's own authorization (`auth:` in feature_store.yaml, `feast.permissions`): it knows
`no_auth`, `oidc` and `kubernetes` only. Both real modes validate every request's token against an
identity provider (an OIDC issuer's keys, or the Kubernetes API's TokenReview) that a laptop or an
offline host does not have, and `no_auth` allows everything. It has no static shared secret and no
request caps, so the guard above does both, while `auth: no_auth` stays in feature_store.yaml.

Workers: `settings.serve_workers`, by default one per CPU core this process may use. A lookup is
mostly I/O-free Python and a search is CPU-bound (query encoding, FAISS, LightGBM), so each worker
serves one request at a time at full speed and more workers than cores would only queue behind each
other; each worker holds its own engine (model, indexes: a few hundred MB).

Three settings differ from Feast's defaults, all for latency:

- no worker recycling (`max_requests=0`): Feast's default recycles a worker every ~1,000 requests, and
  each recycle stalls its requests for ~2 s while the new worker boots (measured: two 2 s requests in
  2,600), longer now that a worker loads its search engine. Recycling guards against leaks;
  `python -m scoring.bench.serving` reports the server's memory before and after its load instead, so a
  leak would show there.
- no access log: one log line per request costs more than the SQLite read it logs.
- `PYTHONOPTIMIZE=1`: the server rebuilds the requested feature service from its registry proto on every
  request, and Feast's classes check their arguments with typeguard's `@typechecked` as they are built;
  those runtime checks were ~1.2 ms of a ~2.1 ms `ranking_v1` lookup. Optimized mode turns them (and
  `assert` statements) off; the serving tests run against the server started this way. The guard's own
  checks are plain `if`s, so they hold in optimized mode too.

Published recommendations reach the server without a restart: `/get-online-features` reads SQLite on
every request, and only the registry (definitions, not values) is cached, refreshed every
`registry_ttl_sec` seconds.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from scoring.serving.request_body import NonFiniteNumber, RequestProblem, reject_constant, shown
from scoring.settings import FEATURE_REPO, Settings

REGISTRY_TTL_SEC = 60

LOOKUP = ("POST", "/get-online-features")
SEARCH = ("POST", "/search")
RECOMMEND = ("POST", "/recommend")
EVENTS = ("POST", "/events")
READ_ROUTES = frozenset({("GET", "/health"), LOOKUP, SEARCH, RECOMMEND})
WRITE_ROUTES = frozenset(
    {
        EVENTS,
        ("POST", "/write-to-online-store"),
        ("POST", "/push"),
        ("POST", "/materialize"),
        ("POST", "/materialize-incremental"),
    }
)
OPEN_PATHS = frozenset(path for _, path in READ_ROUTES | WRITE_ROUTES)

logger = logging.getLogger("aisle.serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def check_lookup(body: bytes, max_entities: int) -> None:
    """Raise RequestProblem for a `/get-online-features` body Feast would fail on, or that is over the cap."""
    try:
        payload = json.loads(body, parse_constant=reject_constant)
    except NonFiniteNumber as error:
        raise RequestProblem(422, f"{error} is not a JSON number: send finite numbers or strings") from None
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RequestProblem(422, f"the body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise RequestProblem(422, "the body must be a JSON object with `entities` and a `feature_service`")
    entities = payload.get("entities")
    if not isinstance(entities, dict) or not entities:
        raise RequestProblem(
            422, "`entities` must be a non-empty object mapping each join key to a list of values"
        )
    for key, values in entities.items():
        if not isinstance(values, list):
            raise RequestProblem(422, f"`entities.{key}` must be a list of values, one per entity row")
        if len(values) > max_entities:
            raise RequestProblem(
                413,
                f"{len(values):,} entity rows in one request; the cap is {max_entities:,} "
                "(AISLE_MAX_ENTITIES_PER_REQUEST): split the request",
            )
    lengths = {key: len(values) for key, values in entities.items()}
    if len(set(lengths.values())) > 1:
        raise RequestProblem(
            422, f"every entity list must have the same length (one value per row): {lengths}"
        )
    if not next(iter(lengths.values())):
        raise RequestProblem(422, "the entity lists are empty: ask for at least one entity row")
    for key, values in entities.items():
        for value in values:
            if not (isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))):
                raise RequestProblem(
                    422, f"`entities.{key}` holds {shown(value)}: an entity value is a string or an integer"
                )
    service, features = payload.get("feature_service"), payload.get("features")
    if service is not None:
        if not isinstance(service, str) or not service.strip():
            raise RequestProblem(
                422, "`feature_service` must name a feature service (e.g. recommendations_v1)"
            )
    elif not isinstance(features, list) or not features:
        raise RequestProblem(
            422, "name a `feature_service`, or list `features` as '<feature_view>:<feature>' references"
        )
    else:
        for reference in features:
            if not isinstance(reference, str) or ":" not in reference:
                raise RequestProblem(
                    422, f"feature reference {shown(reference)} must read '<feature_view>:<feature>'"
                )


async def _reply(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ServingGuard:
    """ASGI middleware in front of Feast's app: route allow-list, bearer token, caps (module docstring)."""

    def __init__(self, app: ASGIApp, token: str, max_request_bytes: int, max_entities: int) -> None:
        self.app = app
        self.token = token.strip().encode()
        self.max_request_bytes = max_request_bytes
        self.max_entities = max_entities

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # websockets (Feast's /ws/chat): refused at the handshake (403)
            await send({"type": "websocket.close", "code": 1008})
            return
        route = (scope["method"], scope["path"])
        try:
            if route in WRITE_ROUTES:
                self._authorize(scope)
            elif route not in READ_ROUTES:
                if scope["path"] in OPEN_PATHS:
                    raise RequestProblem(405, f"{scope['method']} is not allowed on {scope['path']}")
                raise RequestProblem(
                    404, f"no route {scope['path']} here; lookups are POST /get-online-features"
                )
            body = await self._read_body(scope, receive)
            if body is None:  # the client went away
                return
            if route == LOOKUP:
                check_lookup(body, self.max_entities)
        except RequestProblem as problem:
            headers = [(b"www-authenticate", b"Bearer")] if problem.status == 401 else None
            await _reply(send, problem.status, problem.detail, headers)
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _authorize(self, scope: Scope) -> None:
        if not self.token:
            raise RequestProblem(
                403,
                "this server is read-only: write routes are off (set AISLE_SERVE_TOKEN to turn them on)",
            )
        presented = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    presented = credentials.strip()
        if not presented:
            raise RequestProblem(401, "a write route needs the header 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(presented, self.token):
            raise RequestProblem(401, "wrong bearer token")

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, refused with 413 as soon as it is known (Content-Length) or seen to be too big."""
        cap = self.max_request_bytes
        too_big = RequestProblem(
            413, f"the request body is over the cap of {cap:,} bytes (AISLE_MAX_REQUEST_BYTES)"
        )
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > cap:
                raise too_big
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                raise too_big
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _error_handlers() -> dict[type[BaseException], Callable[..., Any]]:
    """Handlers that put Feast's errors in the `{"detail": ...}` shape, and request errors at 422."""
    from fastapi.responses import JSONResponse
    from feast.errors import FeastError

    def answer(status: int, error: BaseException) -> JSONResponse:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        return JSONResponse(
            status_code=status, content={"detail": str(message), "type": type(error).__name__}
        )

    async def feast_error(request: Any, error: FeastError) -> JSONResponse:
        status = error.http_status_code()
        if status >= 500:
            logger.exception("%s %s failed", request.method, request.url.path, exc_info=error)
        return answer(status, error)

    async def request_error(request: Any, error: Exception) -> JSONResponse:
        # Raised by Feast for a request it cannot answer as given; still logged, in case it is not.
        logger.warning("%s %s: 422 for %r", request.method, request.url.path, error)
        return answer(422, error)

    async def server_error(request: Any, error: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path, exc_info=error)
        return answer(500, error)

    return {
        FeastError: feast_error,
        ValueError: request_error,
        KeyError: request_error,
        TypeError: request_error,
        Exception: server_error,
    }


def build_app(settings: Settings) -> ServingGuard:
    """Feast's feature server app for the workspace in the environment, with `/search`, `/events` and
    `/recommend`, behind the guard."""
    from feast import FeatureStore
    from feast.feature_server import get_app
    from feast.permissions.server.utils import (
        ServerType,
        init_auth_manager,
        init_security_manager,
        str_to_auth_manager_type,
    )
    from feast.repo_config import load_repo_config

    config = load_repo_config(FEATURE_REPO, FEATURE_REPO / "feature_store.yaml")
    store = FeatureStore(repo_path=str(FEATURE_REPO), config=config)
    # What `feast serve` does before it builds the app (feast.feature_server.start_server).
    auth_type = str_to_auth_manager_type(store.config.auth_config.type)
    init_security_manager(auth_type=auth_type, fs=store)
    init_auth_manager(auth_type=auth_type, server_type=ServerType.REST, auth_config=store.config.auth_config)
    app = get_app(store, registry_ttl_sec=REGISTRY_TTL_SEC)
    app.exception_handlers.update(_error_handlers())
    from scoring.serving import lookup_route, recommend_route, search_route

    lookup_route.install(app, store)
    search_route.install(app, settings)
    recommend_route.install(app, settings, store)
    return ServingGuard(
        app,
        token=settings.serve_token.get_secret_value(),
        max_request_bytes=settings.max_request_bytes,
        max_entities=settings.max_entities_per_request,
    )


def worker_count(settings: Settings) -> int:
    """`settings.serve_workers`, or one per CPU core this process may use (its affinity, not the host's)."""
    if settings.serve_workers:
        return settings.serve_workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_server(settings: Settings) -> None:
    """Serve `build_app` as `feast serve` does (gunicorn, uvicorn workers), with the latency choices."""
    import gunicorn.app.base

    app = build_app(settings)
    options = {
        "bind": f"{settings.feast_host}:{settings.feast_port}",
        "worker_class": "uvicorn_worker.UvicornWorker",
        "workers": worker_count(settings),
        "worker_connections": 1000,
        "keepalive": 30,
        "max_requests": 0,  # no worker recycling
        "accesslog": None,  # no access log
        # gunicorn's control socket is one path per user ($HOME/.gunicorn/gunicorn.ctl), shared by every
        # server on the host (the tests start several); nothing here uses it.
        "control_socket_disable": True,
    }

    class Application(gunicorn.app.base.BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> ServingGuard:
            return app

    mode = "write routes open to the bearer token" if app.token else "read-only"
    logger.info(
        "serving %s on %s with %s workers (%s; body cap %s bytes, %s entity rows per lookup)",
        FEATURE_REPO,
        options["bind"],
        options["workers"],
        mode,
        settings.max_request_bytes,
        settings.max_entities_per_request,
    )
    Application().run()


def serve_command() -> list[str]:
    """The server process: this module, on this interpreter (the project's virtualenv)."""
    return [sys.executable, "-m", "scoring.serving.server"]


def serve_environ(settings: Settings) -> dict[str, str]:
    """The server's environment: the workspace's paths, its serving settings, optimized mode.

    The token travels in the environment, never on the command line, where `ps` would show it.
    """
    return {
        **os.environ,
        **settings.environ(),
        "AISLE_FEAST_HOST": settings.feast_host,
        "AISLE_FEAST_PORT": str(settings.feast_port),
        "AISLE_SERVE_TOKEN": settings.serve_token.get_secret_value(),
        "AISLE_MAX_REQUEST_BYTES": str(settings.max_request_bytes),
        "AISLE_MAX_ENTITIES_PER_REQUEST": str(settings.max_entities_per_request),
        "AISLE_SERVE_WORKERS": str(settings.serve_workers),
        "AISLE_SERVE_TORCH_THREADS": str(settings.serve_torch_threads),
        "AISLE_SEARCH_MAX_K": str(settings.search_max_k),
        "AISLE_SEARCH_RELOAD_INTERVAL_S": str(settings.search_reload_interval_s),
        "AISLE_SEARCH_QUERY_CACHE_SIZE": str(settings.search_query_cache_size),
        "AISLE_TOP_N": str(settings.top_n),
        "AISLE_EVENTS_MAX_FUTURE_S": str(settings.events_max_future_s),
        "AISLE_RECOMMEND_MAX_K": str(settings.recommend_max_k),
        "AISLE_SESSION_VIEW_WEIGHT": str(settings.session_view_weight),
        "AISLE_SESSION_CART_WEIGHT": str(settings.session_cart_weight),
        "AISLE_SESSION_REBUY_MIN_REPEAT": str(settings.session_rebuy_min_repeat),
        "PYTHONOPTIMIZE": "1",
    }


def exec_server(settings: Settings) -> None:
    """Replace this process with the feature server (`aisle serve`), so signals reach it directly."""
    command = serve_command()
    os.execve(command[0], command, serve_environ(settings))


class FeatureServer:
    """A running server subprocess (what `make serve` runs), ready once `/health` answers; stopped on exit.

    Used by the serving tests and the benchmark, so both exercise exactly what `make serve` runs.
    """

    def __init__(self, settings: Settings, startup_timeout_s: float = 300.0) -> None:
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
                serve_command(),
                env=serve_environ(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the feature server exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if self.healthy():
                return
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(
            f"the feature server did not answer /health in {self.startup_timeout_s} s:\n{self.log_tail()}"
        )

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or workers still starting
            return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def memory_mb(self) -> float:
        """Resident memory of the server (gunicorn's master and its workers), from /proc (Linux)."""
        if self.process is None:
            raise RuntimeError("the server is not started")
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


def main() -> None:
    """`python -m scoring.serving.server` (what `aisle serve` runs): serve the AISLE_* environment's
    workspace."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_server(Settings())


if __name__ == "__main__":
    main()
