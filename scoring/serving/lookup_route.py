"""`POST /get-online-features`: Feast's own lookup, run on the worker's event loop.

Feast's handler (feast.feature_server.get_app) hands each lookup to the thread pool three times: to
fetch the feature service from the registry cache, to read the online store, and to turn the answer
into JSON. Each piece is a fraction of a millisecond of CPU-bound Python, so the hand-offs cost more
than the work: under 16 concurrent clients on 2 cores, every hop waits for the GIL behind the loop and
the other threads. Measured on the small demo (2 workers, 2 quiet cores, `ranking_v1`, one entity, 4,000
requests a run, three runs each): p99 41.8 to 56.2 ms and 745 to 939 req/s with Feast's handler,
25.6 to 29.1 ms and 1,110 to 1,210 req/s with this one.

This handler is the same calls in the same order on the loop, as `/search` and `/recommend` run theirs:
Feast's request model (`GetOnlineFeaturesRequest`), the feature service from the registry cache with
Feast's permission check, `FeatureStore.get_online_features`, and Feast's own conversion of the answer
(`convert_response_to_dict`), so the answer is Feast's, feature for feature (tests/test_feast_serving.py).

- Feast's per-view permission check of a bare feature list only runs when Feast's auth is on; Aisle's
  feature_store.yaml keeps `auth: no_auth` (the guard in scoring/serving/server.py does authorization),
  so a feature list needs none.
- Feast's Prometheus request metrics and audit log, off unless its feature-server config turns them on
  (Aisle's does not), are not recorded here.
- A body not sent as JSON is refused with 422, as FastAPI refuses it before Feast's handler. The guard
  has checked the body's shape and caps before it gets here; an error Feast raises takes the server's
  error handlers, as from Feast's handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

PATH = "/get-online-features"
NOT_JSON = "send the lookup as JSON, with the header 'Content-Type: application/json'"


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type is JSON, as FastAPI decides before it reads a body model (application/json
    or application/*+json): Feast's handler refuses any other body with 422, and so does this one."""
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def features_of(
    store: FeatureStore, service: str | None, references: list[str]
) -> FeatureService | list[str]:
    """The feature service named (from the registry cache, READ_ONLINE checked as Feast does), else the
    feature references as given."""
    from feast.permissions.action import AuthzedAction
    from feast.permissions.security_manager import assert_permissions

    if not service:
        return references
    found = store.get_feature_service(service, allow_cache=True)
    assert_permissions(resource=found, actions=[AuthzedAction.READ_ONLINE])
    return found


def install(app: FastAPI, store: FeatureStore) -> None:
    """Replace Feast's `/get-online-features` handler with the same lookup on the event loop."""
    from feast.feature_server import GetOnlineFeaturesRequest
    from feast.feature_server_utils import convert_response_to_dict

    app.router.routes[:] = [route for route in app.router.routes if getattr(route, "path", None) != PATH]

    async def get_online_features(request: Request) -> Any:
        if not is_json(request.headers.get("content-type")):
            return JSONResponse({"detail": NOT_JSON}, status_code=422)
        wanted = GetOnlineFeaturesRequest.model_validate_json(await request.body())
        response = store.get_online_features(
            features=features_of(store, wanted.feature_service, wanted.features),
            entity_rows=wanted.entities,
            full_feature_names=wanted.full_feature_names,
            include_feature_view_version_metadata=wanted.include_feature_view_version_metadata,
        )
        return JSONResponse(content=convert_response_to_dict(response.proto))

    app.add_api_route(PATH, get_online_features, methods=["POST"], include_in_schema=False)
