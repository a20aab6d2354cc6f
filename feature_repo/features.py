"""Aisle's Feast repository: entities, the feature views dbt documents (one of them, the shopper's session
activity, a stream view fed by a push source), recommendations, search, services.

Entity -> source -> FeatureView -> versioned FeatureService, as in Feast's `local` template. The views
over dbt marts are generated from the dbt manifest (dbt_features.py); only the views the scorer
writes, user_recommendations and search_results, are defined here.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from dbt_features import feature_models_to_views, parquet_source
from feast import Entity, FeatureService, FeatureView, Field, ValueType
from feast.types import Array, Float32, String

OWNER = "recsys@aisle.example"

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A shop customer, keyed by an id that carries no PII.",
)
item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.STRING,
    description="A catalogue item (a stock code in Online Retail).",
)
query = Entity(
    name="query",
    join_keys=["query"],
    value_type=ValueType.STRING,
    description="A search query in its normal form (dbt's normalise_query): folded, lower case, markup "
    "stripped, PII redacted, whitespace collapsed.",
)

_views = feature_models_to_views({"user_id": user, "item_id": item, "query": query})
user_stats: FeatureView = _views["user_stats"]
item_stats: FeatureView = _views["item_stats"]
user_item_stats: FeatureView = _views["user_item_stats"]
item_text: FeatureView = _views["item_text"]
user_history: FeatureView = _views["user_history"]
query_stats: FeatureView = _views["query_stats"]
item_search_stats: FeatureView = _views["item_search_stats"]
query_item_stats: FeatureView = _views["query_item_stats"]
# A stream feature view over the push source `session_activity_push` (dbt meta.feast.push_source).
user_session_activity: FeatureView = _views["user_session_activity"]

_published = (
    Path(os.environ.get("AISLE_DATA_DIR", Path(__file__).resolve().parents[1] / "data")) / "published"
)

user_recommendations = FeatureView(
    name="user_recommendations",
    entities=[user],
    ttl=timedelta(days=0),
    schema=[
        Field(name="item_ids", dtype=Array(String), description="Recommended item ids, best first."),
        Field(name="scores", dtype=Array(Float32), description="Ranker score of each recommended item."),
        Field(
            name="sources",
            dtype=Array(String),
            description="Which candidate source proposed each item first (retrieval/candidates.py SOURCES).",
        ),
        Field(
            name="reasons",
            dtype=Array(String),
            description="A reason a shopper can read for each item, e.g. 'You bought this 3 times, last 12 "
            "days ago' or 'Often bought with <title>, which you bought'.",
        ),
        Field(
            name="discover_item_ids",
            dtype=Array(String),
            description="The discover list: the best items the user never bought, best first.",
        ),
        Field(
            name="discover_scores", dtype=Array(Float32), description="Ranker score of each discover item."
        ),
        Field(name="discover_reasons", dtype=Array(String), description="A reason for each discover item."),
        Field(name="run_id", dtype=String, description="The scoring run that published the lists."),
    ],
    source=parquet_source(
        name="user_recommendations_source",
        path=_published / "user_recommendations.parquet",
        description="Written by `make score` (scoring/pipeline/publish.py), one row per user and run.",
    ),
    online=True,
    description="Each active user's top-N recommendations (repeats allowed) and discover list (never "
    "bought), each item with a reason, as the last successful run published them.",
    owner=OWNER,
    tags={"producer": "scoring", "team": "recsys"},
)

# The scorer publishes it like user_recommendations (an absent file is fine until the first run: Feast
# reads the source only when the view is queried offline, and the online rows are written by publishing).
search_results = FeatureView(
    name="search_results",
    entities=[query],
    ttl=timedelta(days=0),
    schema=[
        Field(name="item_ids", dtype=Array(String), description="The head query's result items, best first."),
        Field(name="scores", dtype=Array(Float32), description="Search ranker score of each result item."),
        Field(
            name="reasons",
            dtype=Array(String),
            description="Why each item matched: lexical, semantic, popular, bought_before (comma-separated "
            "when several).",
        ),
        Field(name="run_id", dtype=String, description="The scoring run that published the results."),
    ],
    source=parquet_source(
        name="search_results_source",
        path=_published / "search_results.parquet",
        description="Written by `make score` (its search stage), one row per head query and run.",
    ),
    online=True,
    description="Precomputed results of the head queries, as the last successful run published them.",
    owner=OWNER,
    tags={"producer": "scoring", "team": "recsys"},
)

ranking_v1 = FeatureService(
    name="ranking_v1",
    features=[user_stats, item_stats, user_item_stats],
    description="Features the ranker reads for a (user, item) pair: user RFM, item popularity, affinity.",
    owner=OWNER,
    tags={"version": "1", "consumer": "ranker"},
)

recommendations_v1 = FeatureService(
    name="recommendations_v1",
    features=[user_recommendations],
    description="A user's published top-N and discover lists with scores, candidate sources and reasons.",
    owner=OWNER,
    tags={"version": "1", "consumer": "storefront"},
)

item_text_v1 = FeatureService(
    name="item_text_v1",
    features=[item_text],
    description="Clean title, category and attributes of an item, for display and text models.",
    owner=OWNER,
    tags={"version": "1", "consumer": "search"},
)

search_ranking_v1 = FeatureService(
    name="search_ranking_v1",
    features=[query_stats, query_item_stats, item_search_stats, user_stats, item_stats],
    description="Features the search ranker reads for a (query, item) pair, and for a known shopper: query "
    "volume and engagement, query x item clicks, the item's search engagement, user RFM, item popularity.",
    owner=OWNER,
    tags={"version": "1", "consumer": "search ranker"},
)

session_v1 = FeatureService(
    name="session_v1",
    features=[user_session_activity],
    description="A shopper's live session: items viewed, carted and bought in the last session window, "
    "pushed by POST /events; POST /recommend re-ranks the published candidates with it.",
    owner=OWNER,
    tags={"version": "1", "consumer": "real-time recommend"},
)

search_results_v1 = FeatureService(
    name="search_results_v1",
    features=[search_results],
    description="A head query's published results with scores and why each item matched.",
    owner=OWNER,
    tags={"version": "1", "consumer": "storefront search"},
)
