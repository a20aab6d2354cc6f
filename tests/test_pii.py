"""PII never passes staging, checked end to end on the real pipeline (no mocks).

A tiny canonical raw folder gets an e-mail address or a phone number in every text and id column of every
raw table on some rows, including user ids that are e-mail addresses or phone numbers, the same in events
and users. After `pipeline.run` (dbt build with its `no_pii` tests, Feast, fine-tuning, publishing) every
relation the run wrote is scanned with the patterns of dbt's `contains_pii` macro: every table and view of
every schema of the warehouse, every Parquet file under the data folder (marts, run folder, published),
the DuckDB serving database, the Feast online store (every cell, and the whole file's bytes) and the Feast
registry. Not one match may remain, and ids that were PII still join: events to users, users to their
recommendations.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from scoring.ingest import demo_shop
from scoring.pipeline import job
from scoring.settings import DBT_DIR, FEATURE_REPO, Settings
from scoring.warehouse import tables
from tests.conftest import tiny_settings

pytestmark = pytest.mark.e2e  # the whole nightly job on a leaky folder


def _macro_body(name: str) -> str:
    """The body of a pattern macro in text_rules.sql: the one definition dbt and this test share."""
    text = (DBT_DIR / "macros" / "text_rules.sql").read_text()
    match = re.search(r"\{%\s*macro " + name + r"\(\)\s*-%\}(.*?)\{%-\s*endmacro\s*%\}", text, re.S)
    assert match, f"macro {name} not found in text_rules.sql"
    return match.group(1).strip()


EMAIL, PHONE = _macro_body("email_pattern"), _macro_body("phone_pattern")
PII = re.compile(f"(?:{EMAIL})|(?:{PHONE})")
PII_BYTES = re.compile(PII.pattern.encode())
# The only addresses allowed anywhere: the owners the project itself configures (dbt var `owner`, and
# the scorer's views in feature_repo/features.py), which Feast's registry records as metadata.
OWNERS = tuple(
    m.encode()
    for source, pattern in (
        (DBT_DIR / "dbt_project.yml", r'owner: "([^"]+)"'),
        (FEATURE_REPO / "features.py", r'OWNER = "([^"]+)"'),
    )
    for m in re.findall(pattern, source.read_text())
)


def _pii(data: bytes | str) -> list[bytes]:
    """The PII matches in some text or bytes, the project's owner addresses aside."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    found = [m.group(0) for m in PII_BYTES.finditer(raw)]
    return [m for m in found if not any(owner in m for owner in OWNERS)]


PII_USERS = {
    **{n: f"shopper.{n}@gmail.com" for n in range(8)},
    **{n: f"+44 7700 900{n:03d}" for n in range(8, 12)},
}


def _leaky_folder(root: Path) -> tuple[Path, dict[str, str]]:
    """The tiny demo shop as canonical CSV files, with PII in every text and id column on some rows.
    Returns the folder and the raw user ids that became PII (old id -> PII id)."""
    demo_shop.generate(root / "demo", n_users=150, n_items=60, days=90, seed=42, defect_rate=0.02)
    events, items, users, searches = (
        pd.read_parquet(root / "demo" / f"{t}.parquet") for t in ("events", "items", "users", "searches")
    )

    # Ids: the most active buyers become e-mail addresses or phone numbers, in events and users alike;
    # two items and a few orders too.
    buyers = events[events.event_type == "purchase"].user_id.value_counts().index[: len(PII_USERS)]
    user_ids = {old: PII_USERS[n] for n, old in enumerate(buyers)}
    item_ids = dict(zip(items.item_id[:2], ["returns@nordvik.example.com", "0161 496 0001"], strict=True))
    orders = events.order_id.dropna().unique()[:5]
    order_ids = {old: f"order-{k}@checkout.example.com" for k, old in enumerate(orders)}
    for frame in (events, users, searches):
        frame["user_id"] = frame.user_id.replace(user_ids)
    for frame in (events, items, searches):
        frame["item_id"] = frame.item_id.replace(item_ids)
    events["order_id"] = events.order_id.replace(order_ids)

    def leak(frame: pd.DataFrame, column: str, rows: range, value: str) -> None:
        frame[column] = frame[column].astype(object)
        for k, row in enumerate(frame.index[list(rows)]):
            frame.loc[row, column] = value.format(k=k, old=frame.loc[row, column])

    # Every other column, on a few rows (the typed ones are quarantined: their PII must not leak there).
    events["title"] = None  # the optional column, carried by some events
    leak(events, "title", range(0, 400, 20), "Mug, ask jo.{k}@example.org")
    leak(events, "country", range(10, 410, 20), "{old}, tel +33 1 23 45 67 {k:02d}")
    leak(events, "event_type", range(3, 6), "view, mail a{k}@b.example.com")
    leak(events, "event_at", range(6, 9), "+44 20 7946 0{k:03d}")
    leak(events, "quantity", range(9, 12), "x{k}@y.example.org")
    leak(events, "unit_price", range(12, 15), "0161 496 0{k:03d}")
    leak(items, "title", range(2, 5), "{old} call 020 7946 0{k:03d}")
    leak(items, "description", range(5, 10), "{old} Write to sales{k}@lumen.example.com.")
    leak(items, "category", range(10, 12), "{old} +44 7700 900{k:03d}")
    leak(items, "brand", range(12, 14), "{old} (brand{k}@mail.example.com)")
    leak(items, "price", range(59, 60), "ring +44 7700 900999")
    leak(users, "full_name", range(0, 3), "{old} <name{k}@example.net>")
    leak(users, "country", range(3, 8), "{old} 020 7946 0{k:03d}")
    leak(users, "signed_up_at", range(8, 10), "since{k}@example.com")
    # The search log: typed into the box (kept, redacted), and in every other column.
    leak(searches, "query", range(0, 300, 30), "{old} mail me at buyer{k}@example.com")
    leak(searches, "query", range(15, 315, 30), "call +44 7700 900{k:03d} about {old}")
    leak(searches, "search_id", range(1, 3), "s{k}@search.example.com")
    leak(searches, "searched_at", range(3, 5), "+44 20 7946 0{k:03d}")
    leak(searches, "action", range(5, 7), "click, mail c{k}@d.example.com")
    leak(searches, "position", range(7, 9), "0161 496 0{k:03d}")
    leak(searches, "item_id", range(9, 11), "returns{k}@nordvik.example.com")

    folder = root / "raw"
    folder.mkdir()
    for name, frame in (("events", events), ("items", items), ("users", users), ("searches", searches)):
        frame.to_csv(folder / f"{name}.csv", index=False)
        leaked = {
            c: int(frame[c].astype(str).map(lambda v: bool(PII.search(v))).sum()) for c in frame.columns
        }
        assert all(leaked.values()), f"{name}: a column without injected PII: {leaked}"
    return folder, user_ids


def _text_columns(con: duckdb.DuckDBPyConnection, relation: str) -> list[str]:
    """Text, list, struct and map columns of a relation: anything a string can hide in."""
    described = con.execute(f"describe select * from {relation}").fetchall()
    kinds = ("VARCHAR", "[]", "STRUCT", "MAP", "JSON", "BLOB")
    return [name for name, dtype, *_ in described if any(k in dtype for k in kinds)]


def _scan_relation(con: duckdb.DuckDBPyConnection, relation: str) -> tuple[int, int, list[str]]:
    """(rows, cells matching a PII pattern, examples) of one relation."""
    rows = con.execute(f"select count(*) from {relation}").fetchone()[0]
    columns = _text_columns(con, relation)
    if not columns:
        return rows, 0, []
    checks = [
        f"""select '{c}' as col, cast("{c}" as varchar) as value from {relation}
            where regexp_matches(cast("{c}" as varchar), $1)"""
        for c in columns
    ]
    found = con.execute(" union all ".join(checks), [PII.pattern]).fetchall()
    return rows, len(found), [f"{col}={value[:80]!r}" for col, value in found[:3]]


def _scan_duckdb_file(path: Path, label: str, scanned: list[str], hits: list[str]) -> None:
    con = duckdb.connect(str(path), read_only=True)
    try:
        relations = con.execute(
            "select table_schema, table_name from information_schema.tables"
            " where table_catalog = current_database() order by 1, 2"
        ).fetchall()
        for schema, table in relations:
            name = f'"{schema}"."{table}"'
            rows, found, examples = _scan_relation(con, name)
            scanned.append(f"{label} {schema}.{table} ({rows} rows)")
            if found:
                hits.append(f"{label} {schema}.{table}: {found} cells, e.g. {examples}")
    finally:
        con.close()


def _scan_parquet(path: Path, root: Path, scanned: list[str], hits: list[str]) -> None:
    relation = f"read_parquet('{path}')"
    rows, found, examples = _scan_relation(duckdb.connect(), relation)
    label = f"parquet {path.relative_to(root)} ({rows} rows)"
    scanned.append(label)
    if found:
        hits.append(f"{label}: {found} cells, e.g. {examples}")


def _scan_bytes(path: Path, label: str, scanned: list[str], hits: list[str]) -> None:
    data = path.read_bytes()
    found = _pii(data)
    scanned.append(f"{label} ({len(data):,} bytes)")
    if found:
        hits.append(f"{label}: {len(found)} matches, e.g. {found[:3]}")


def _scan_sqlite(path: Path, label: str, scanned: list[str], hits: list[str]) -> None:
    """Every cell of every table (Feast's values are protobuf bytes: scanned as raw bytes)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type = 'table' order by 1")]
        for table in tables:
            rows = con.execute(f'select * from "{table}"').fetchall()
            found = []
            for row in rows:
                for cell in row:
                    if isinstance(cell, bytes | bytearray | str) and _pii(cell):
                        found.append(cell[:80])
            scanned.append(f"{label} table {table} ({len(rows)} rows)")
            if found:
                hits.append(f"{label} table {table}: {len(found)} cells, e.g. {found[:3]}")
    finally:
        con.close()
    _scan_bytes(path, f"{label} (whole file)", scanned, hits)


def _is_lightgbm_model(path: Path) -> bool:
    """A LightGBM text model (the rankers' weights): thousands of numbers, split thresholds and leaf
    values, separated by spaces, where three in a row can look like a phone number; like the encoder's
    weights, it holds no row of data, only the feature names the code gave it."""
    with path.open("rb") as handle:
        return handle.read(5) == b"tree\n"


def _scan_workspace(settings: Settings) -> tuple[list[str], list[str]]:
    """Every relation the run wrote under the data folder. Returns (what was scanned, hits)."""
    root = settings.data_dir
    scanned: list[str] = []
    hits: list[str] = []
    _scan_duckdb_file(settings.warehouse_path, "warehouse", scanned, hits)
    seen = {settings.warehouse_path.resolve()}
    for path in sorted(root.rglob("*.duckdb")):
        if path.resolve() not in seen:
            seen.add(path.resolve())
            _scan_duckdb_file(path, f"duckdb {path.relative_to(root)}", scanned, hits)
    parquet = sorted({p.resolve() for p in root.rglob("*.parquet")})
    for path in parquet:
        _scan_parquet(path, root.resolve(), scanned, hits)
    _scan_sqlite(settings.online_store_path, "feast online store", scanned, hits)
    _scan_bytes(settings.registry_path, "feast registry", scanned, hits)
    done = {*seen, *parquet, settings.online_store_path.resolve(), settings.registry_path.resolve()}
    # Every other file's bytes (the online store's write-ahead log, run manifests, the ranker, the
    # tokenizer, embeddings, other builds' registries), except the dbt target folders, which hold the
    # project's compiled SQL and unit-test fixtures (code, not data), and the models' weights (the
    # encoder's and the LightGBM rankers').
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        if path.resolve() in done or "target" in path.relative_to(root).parts:
            continue
        if path.suffix in {".safetensors", ".bin", ".pt"} or _is_lightgbm_model(path):
            continue
        done.add(path.resolve())
        _scan_bytes(path, f"file {path.relative_to(root)}", scanned, hits)
    return scanned, hits


@pytest.fixture(scope="module")
def leaky_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict[str, str]]:
    root = tmp_path_factory.mktemp("pii")
    folder, user_ids = _leaky_folder(root)
    settings = tiny_settings(root / "data", source="files", raw_path=folder, raw_format="csv")
    job.run(settings)  # the dbt build's no_pii tests pass on it: PII never reached a model
    return settings, user_ids


def test_the_raw_folder_really_holds_pii(leaky_run: tuple[Settings, dict[str, str]]) -> None:
    """The positive control: the same scan finds the injected PII in the raw files."""
    settings, _ = leaky_run
    scanned: list[str] = []
    hits: list[str] = []
    for path in sorted(Path(settings.raw_path).glob("*.csv")):
        _scan_bytes(path, f"raw {path.name}", scanned, hits)
    assert len(hits) == 4, hits


def test_no_relation_of_the_run_holds_pii(leaky_run: tuple[Settings, dict[str, str]]) -> None:
    settings, _ = leaky_run
    scanned, hits = _scan_workspace(settings)
    print(f"\nPII scan: {len(scanned)} relations scanned, {len(hits)} with a hit")
    for line in scanned:
        print("  " + line)
    assert not hits, "PII left in:\n" + "\n".join(hits)
    text = "\n".join(scanned)
    for expected in (
        "warehouse staging.stg_shop__events",
        "warehouse staging.stg_shop__users",
        "warehouse intermediate.int_events_checked",
        "warehouse intermediate.int_sessions",
        "warehouse main.fct_quarantine ",
        "warehouse staging.stg_shop__searches",
        "warehouse intermediate.int_searches_checked",
        "fct_searches.parquet",
        "fct_query_stats.parquet",
        "fct_query_item_stats.parquet",
        "warehouse main.fct_order_lines",
        "warehouse main.fct_sessions",
        "recommendations.parquet",
        "fct_user_histories.parquet",
        "serving.duckdb",
        "feast online store table",
        "feast registry",
    ):
        assert expected in text, f"the scan missed {expected}"
    assert len(scanned) >= 40


def test_pii_ids_become_one_digest_that_still_joins(leaky_run: tuple[Settings, dict[str, str]]) -> None:
    settings, user_ids = leaky_run
    digests = {"pii_" + hashlib.sha256(v.encode()).hexdigest()[:20] for v in user_ids.values()}
    joined = tables.read(
        settings,
        "select e.user_id, count(*) as events, count(u.user_id) as joined"
        " from staging.stg_shop__events as e left join staging.stg_shop__users as u using (user_id)"
        " where e.user_id like 'pii_%' group by 1",
    )
    assert set(joined.user_id) == digests, "each PII user id became its digest in the events"
    assert (joined.events == joined.joined).all(), "every event of a PII user joins the user's row"
    buyers = set(tables.read(settings, "select distinct user_id from fct_order_lines").user_id)
    assert digests <= buyers
    published = set(pd.read_parquet(settings.published_recommendations).user_id)
    assert digests <= published, "the users whose ids were PII still get recommendations"
    quarantine = tables.read(settings, "select raw_values from fct_quarantine")
    assert quarantine.raw_values.str.contains(r"\[email\]|\[phone\]").any(), "raw values are redacted"
