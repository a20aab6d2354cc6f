"""`POST /search` on the feature server: the request's checks, the worker's search engine, the route.

The route is added to Feast's own FastAPI app (scoring/serving/server.py), so one server on one port
answers both `/get-online-features`, unchanged, and `/search`. Feast's app has a `/search` of its own
(vector search over vector-indexed views, which Aisle does not define); it is removed first.

A request is `{"query": str, "user_id"?: str, "k"?: int, "filters"?: {"categories"?: [str],
"min_price"?: number, "max_price"?: number}}`, and the answer is the engine's `SearchAnswer` JSON. Every
check here answers `{"detail": "<what is wrong>"}`, and the server stays up:

- 400 when the body cannot be read as JSON at all: empty, not UTF-8, malformed, or NaN/Infinity (which
  Python's parser accepts and JSON does not). The lookup route answers these 422, as Feast and FastAPI
  do, and keeps that for compatibility; a search body has no such history, so it gets the status HTTP
  defines for a request that cannot be parsed.
- 422 when the JSON is read but is not a search: not an object, an unknown field, a wrong type, an empty
  or oversized query (`settings.max_query_chars`, counted in characters as typed), `k` outside
  1..`settings.search_max_k`, a filter that is not a list of category names or a finite price >= 0, or a
  minimum price above the maximum.
- 413 for a body over `settings.max_request_bytes` (the guard, before this code sees it).
- 503 while no scoring run has been published, or the published run cannot be loaded: the message says
  so, and `/get-online-features` keeps answering meanwhile.
- 500 for an engine failure, logged with its traceback (never disguised as the caller's 4xx).

Each gunicorn worker loads its own engine once, at startup (the app's lifespan, after the fork, so no
torch state crosses a fork; the libraries are imported once, in the master), with torch limited to
`settings.serve_torch_threads` threads (one: measured on 2 cores, a second thread made one query's
encoding no faster at p50 on an idle host and 13 times slower at p95, and 11 to 24 times slower at p50
whenever anything else was running; `make bench` times both),
and a watcher thread calls the engine's `reload_if_changed` every `settings.search_reload_interval_s`
seconds, so a new publication is served without a restart and no request pays for the check or for the
reload. A run that fails to load is logged once and leaves the last good engine serving (or the 503).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from scoring.serving.reloading import ReloadingService
from scoring.serving.request_body import RequestProblem, json_object, shown
from scoring.settings import Settings

if TYPE_CHECKING:
    from scoring.search.engine import SearchEngine

SEARCH = ("POST", "/search")
FIELDS = ("query", "user_id", "k", "filters")
FILTER_FIELDS = ("categories", "min_price", "max_price")
EXAMPLE = '{"query": "red mug", "k": 10}'

logger = logging.getLogger("aisle.serving.search")


@dataclass(frozen=True)
class SearchRequest:
    """A checked search request: the query as typed, and the engine's other arguments."""

    query: str
    user_id: str | None = None
    k: int = 10
    categories: tuple[str, ...] | None = None
    min_price: float | None = None
    max_price: float | None = None

    @property
    def filtered(self) -> bool:
        return self.categories is not None or self.min_price is not None or self.max_price is not None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _price(filters: dict[str, Any], name: str) -> float | None:
    value = filters.get(name)
    if value is None:
        return None
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise RequestProblem(
            422, f"`filters.{name}` must be a price, a finite number >= 0, not {shown(value)}"
        )
    return float(value)


def _filters(value: Any) -> tuple[tuple[str, ...] | None, float | None, float | None]:
    if value is None:
        return None, None, None
    if not isinstance(value, dict):
        raise RequestProblem(
            422,
            "`filters` must be an object with any of `categories` (a list of names), `min_price` and "
            f"`max_price`, not {shown(value)}",
        )
    unknown = sorted(set(value) - set(FILTER_FIELDS))
    if unknown:
        raise RequestProblem(
            422, f"unknown filter {shown(unknown[0])}: filters are {', '.join(FILTER_FIELDS)}"
        )
    categories = value.get("categories")
    if categories is not None:
        if not isinstance(categories, list) or not categories:
            raise RequestProblem(
                422,
                '`filters.categories` must be a non-empty list of category names, e.g. ["kitchen"], '
                f"not {shown(categories)} (leave it out to search every category)",
            )
        for name in categories:
            if not isinstance(name, str) or not name.strip():
                raise RequestProblem(
                    422, f"`filters.categories` holds {shown(name)}: a category is a non-empty string"
                )
        categories = tuple(name.strip() for name in categories)
    low, high = _price(value, "min_price"), _price(value, "max_price")
    if low is not None and high is not None and low > high:
        raise RequestProblem(
            422, f"`filters.min_price` ({low:g}) is above `filters.max_price` ({high:g}): no item can match"
        )
    return categories, low, high


def parse_search(body: bytes, max_query_chars: int, max_k: int, default_k: int = 10) -> SearchRequest:
    """The request in `body`, or RequestProblem (400 unreadable, 422 not a valid search) saying why."""
    payload = json_object(body, FIELDS, EXAMPLE)
    if "query" not in payload:
        raise RequestProblem(422, f"`query` is missing: send the text the shopper typed, e.g. {EXAMPLE}")

    from scoring.search.query import QueryError, checked

    query = payload["query"]
    try:
        checked(query, max_query_chars)
    except QueryError as error:
        raise RequestProblem(422, str(error)) from None

    user_id = payload.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise RequestProblem(
            422, f"`user_id` must be a string (or null for an anonymous shopper), not {shown(user_id)}"
        )
    user_id = (user_id or "").strip() or None

    k = payload.get("k")
    if k is None:
        k = default_k
    elif not (isinstance(k, int) and not isinstance(k, bool)) or not 1 <= k <= max_k:
        raise RequestProblem(
            422, f"`k` must be a whole number from 1 to {max_k} (AISLE_SEARCH_MAX_K), not {shown(k)}"
        )
    categories, low, high = _filters(payload.get("filters"))
    return SearchRequest(query, user_id, k, categories, low, high)


class SearchService(ReloadingService["SearchEngine"]):
    """One worker's engine. The engine reloads itself (`reload_if_changed`), building the new run's
    artefacts aside and swapping them in one assignment, so a search running meanwhile finishes on the
    old ones."""

    what = "search"
    unavailable = "search is not available"

    def start(self) -> None:
        """Limit torch's threads in this process (a worker), then load the engine and start the watcher."""
        import torch

        torch.set_num_threads(self.settings.serve_torch_threads)
        super().start()

    def load(self) -> SearchEngine:
        from scoring.search.engine import SearchEngine

        return SearchEngine.load(self.settings)

    def reloaded(self, value: SearchEngine) -> SearchEngine | None:
        return value if value.reload_if_changed() else None


def _json(value: Any) -> Any:
    """numpy scalars and arrays, which json cannot write, as Python numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def install(app: FastAPI, settings: Settings) -> SearchService:
    """Replace Feast's `/search` with Aisle's, and load the engine in each worker's lifespan."""
    # The engine's libraries (torch, sentence-transformers, FAISS, LightGBM) are imported here, in gunicorn's
    # master before it forks, so each worker starts with them (one import instead of one per worker:
    # ~15 s of CPU each) and only reads its run's files at startup. Nothing here runs a torch operation,
    # so no thread pool exists yet to be broken by the fork.
    import scoring.search.engine  # noqa: F401
    import scoring.training.finetune  # noqa: F401

    service = SearchService(settings)
    app.router.routes[:] = [route for route in app.router.routes if getattr(route, "path", None) != "/search"]

    async def search(request: Request) -> Response:
        # A plain coroutine on the worker's event loop: the work is CPU-bound (torch, FAISS, LightGBM),
        # so a thread pool would only add hand-offs and contend for the GIL; a worker per core serves
        # searches in parallel instead (server.py sizes the workers).
        from scoring.search.engine import SearchUnavailable
        from scoring.search.query import QueryError

        try:
            wanted = parse_search(await request.body(), settings.max_query_chars, settings.search_max_k)
            engine = service.current()
            filters = None
            if wanted.filtered:
                from scoring.search.engine import SearchFilters

                filters = SearchFilters(
                    categories=list(wanted.categories) if wanted.categories else None,
                    min_price=wanted.min_price,
                    max_price=wanted.max_price,
                )
            answer = engine.search(wanted.query, user_id=wanted.user_id, k=wanted.k, filters=filters)
        except RequestProblem as problem:
            return JSONResponse({"detail": problem.detail}, status_code=problem.status)
        except QueryError as error:
            return JSONResponse({"detail": str(error)}, status_code=422)
        except SearchUnavailable as error:
            return JSONResponse({"detail": str(error)}, status_code=503)
        except Exception as error:
            logger.exception("POST /search failed")
            return JSONResponse(
                {"detail": f"the search failed: {type(error).__name__}: {error}"}, status_code=500
            )
        body = json.dumps(answer.to_json(), default=_json, ensure_ascii=False).encode()
        return Response(body, media_type="application/json")

    app.add_api_route("/search", search, methods=["POST"], include_in_schema=False)

    feast_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        service.start()
        try:
            async with feast_lifespan(app) as state:
                yield state
        finally:
            service.stop()

    app.router.lifespan_context = lifespan
    return service
