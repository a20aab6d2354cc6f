"""How well the dbt rules catch the demo shop's known defects: precision and recall per defect class.

Why it exists: the demo generator records every defect it injects (`_truth/defects.parquet`), so the
quality rules can be scored exactly rather than eyeballed. A quarantine class is caught when the row's
`source_row_number` is in `fct_quarantine` with the expected rule code; a repair class is caught when
the item dimension holds the clean title, or a description without the leaked contact, or (search log)
when a query with PII or markup reaches `fct_searches` in exactly the normal form the truth gives
(`_truth/clean_queries.parquet`). Precision asks the reverse: of the rows a rule flagged, how many
really had that defect. The search classes are scored when the raw folder has a search log.

The truth numbers rows across the whole shop, dbt within each raw file: a shop whose last days arrive as
dated drops (`AISLE_DEMO_PENDING_DAYS`, scoring/ingest/arrivals.py) is read back in arrival order, so a
row's place in the shop is its file's offset plus its place in the file, and defects still pending are
not counted as missed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from scoring.ingest import arrivals
from scoring.settings import Settings
from scoring.warehouse import tables

# Injected defect class (and column, for the mixed class) -> the rule code that must catch it.
QUARANTINE_RULES: dict[tuple[str, str, str | None], str] = {
    ("events", "duplicate", None): "duplicate_row",
    ("events", "missing_user", "user_id"): "missing_user_id",
    ("events", "bad_price", "unit_price"): "non_positive_price",
    ("events", "quantity_outlier", "quantity"): "quantity_outlier",
    ("events", "future_timestamp", "event_at"): "future_timestamp",
    ("events", "orphan_item", "item_id"): "orphan_item_id",
    ("events", "malformed_value", "quantity"): "malformed_quantity",
    ("events", "malformed_value", "event_at"): "malformed_timestamp",
    ("events", "malformed_value", "event_type"): "malformed_event_type",
    ("users", "duplicate", None): "duplicate_row",
    ("searches", "empty_query", "query"): "empty_query",
    ("searches", "oversized_query", "query"): "oversized_query",
    ("searches", "bot_traffic", "user_id"): "bot_traffic",
    ("searches", "unknown_item", "item_id"): "unknown_item",
}
# Search-log repairs: defect class -> (rule code, the staging flag that marks the rows it repaired).
SEARCH_REPAIRS: dict[str, tuple[str, str]] = {
    "pii_in_query": ("pii_in_query", "query_redacted"),
    "markup_in_query": ("markup_in_query", "query_markup_stripped"),
}
SCORECARD_COLUMNS = [
    "table",
    "defect_class",
    "column",
    "rule_code",
    "injected",
    "caught",
    "flagged",
    "false_flags",
]


def _truth(raw_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    truth_dir = raw_dir / "_truth"
    return (
        pd.read_parquet(truth_dir / "defects.parquet"),
        pd.read_parquet(truth_dir / "clean_titles.parquet"),
        pd.read_parquet(truth_dir / "clean_descriptions.parquet"),
    )


def _row_count(path: Path) -> int:
    if path.suffix == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    return len(pd.read_csv(path, dtype=str, keep_default_na=False))


def _file_offsets(raw_dir: Path, fmt: str) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    """Where each arrived file of each table starts in the shop's row order, and how many rows of each
    table have arrived."""
    offsets: dict[tuple[str, str], int] = {}
    arrived: dict[str, int] = {}
    for table in ("events", "items", "users", "searches"):
        total = 0
        for path in arrivals.arrival_files(raw_dir, table, fmt):
            offsets[(table, path.name)] = total
            total += _row_count(path)
        arrived[table] = total
    return offsets, arrived


def _shop_rows(
    frame: pd.DataFrame, offsets: dict[tuple[str, str], int], table: str | None = None
) -> pd.Series:
    """Each staged or quarantined row's place in the whole shop (the truth's row_number)."""
    tables_ = frame["relation"] if table is None else pd.Series(table, index=frame.index)
    start = [offsets[(t, f)] for t, f in zip(tables_, frame["source_file"], strict=True)]
    return frame["source_row_number"] + pd.Series(start, index=frame.index, dtype="int64")


def has_search_log(settings: Settings) -> bool:
    """Whether the raw folder holds a search log (an optional table), so its defects can be scored."""
    return (settings.resolved_raw_path / f"searches.{settings.raw_format}").exists()


def _quarantine_rows(truth: pd.DataFrame, flagged: pd.DataFrame, relations: set[str]) -> list[dict]:
    """Recall and precision of each quarantine rule against the injected rows it should catch."""
    rows = []
    for (table, defect, column), rule in QUARANTINE_RULES.items():
        if table not in relations:
            continue
        injected = truth[(truth.table == table) & (truth.defect_class == defect)]
        if column is not None:
            injected = injected[injected.column == column]
        hits = flagged[(flagged.relation == table) & (flagged.rule_code == rule)]
        injected_rows = set(injected.row_number)
        hit_rows = set(hits.source_row_number)
        rows.append(
            dict(
                table=table,
                defect_class=defect,
                column=column or "*",
                rule_code=rule,
                injected=len(injected_rows),
                caught=len(injected_rows & hit_rows),
                flagged=len(hit_rows),
                false_flags=len(hit_rows - injected_rows),
            )
        )
    return rows


def _repair_rows(settings: Settings, truth: pd.DataFrame, titles: pd.DataFrame, descs: pd.DataFrame) -> list:
    """Repairs: the mart must hold the clean text, and only the damaged rows may be marked repaired."""
    items = tables.read(
        settings,
        "select s.source_row_number, s.item_id, s.title_repaired, s.description_redacted,"
        " d.title, d.description from staging.stg_shop__items as s"
        " left join dim_items as d on s.item_id = d.item_id",
    )
    by_id = items.set_index("item_id")
    fixed_titles = titles.join(by_id, on="item_id")
    fixed_descs = descs.join(by_id, on="item_id")
    title_ok = fixed_titles.title == fixed_titles.clean_title
    desc_ok = [
        isinstance(d, str) and p not in d and d.startswith(c)
        for d, p, c in zip(
            fixed_descs.description, fixed_descs.pii_value, fixed_descs.clean_description, strict=True
        )
    ]
    messy = set(truth[(truth.table == "items") & (truth.defect_class == "messy_text")].row_number)
    leaky = set(truth[(truth.table == "items") & (truth.defect_class == "pii_in_text")].row_number)
    repaired = set(items[items.title_repaired].source_row_number)
    redacted = set(items[items.description_redacted].source_row_number)
    return [
        dict(
            table="items",
            defect_class="messy_text",
            column="title",
            rule_code="messy_text",
            injected=len(messy),
            caught=int(title_ok.sum()),
            flagged=len(repaired),
            false_flags=len(repaired - messy),
        ),
        dict(
            table="items",
            defect_class="pii_in_text",
            column="description",
            rule_code="pii_in_text",
            injected=len(leaky),
            caught=int(sum(desc_ok)),
            flagged=len(redacted),
            false_flags=len(redacted - leaky),
        ),
    ]


def _search_repair_rows(
    settings: Settings, truth: pd.DataFrame, offsets: dict[tuple[str, str], int], arrived: int
) -> list[dict]:
    """Search-log repairs: a query with PII or markup is kept, in exactly the truth's normal form.

    Also one `(query normal form)` row: of every row the truth gives a clean query for (all rows not
    quarantined for their text), how many staging normalised to exactly that text (recall), so case,
    whitespace, markup and redaction are checked on the whole log, not only on the defective rows.
    """
    clean = pd.read_parquet(settings.resolved_raw_path / "_truth" / "clean_queries.parquet")
    staged = tables.read(
        settings,
        "select s.source_file, s.source_row_number, s.query, s.query_redacted, s.query_markup_stripped,"
        " f.row_key is not null as kept from staging.stg_shop__searches as s"
        " left join fct_searches as f on s.row_key = f.row_key",
    )
    staged = staged.set_index(_shop_rows(staged, offsets, "searches"))
    expected = clean[clean["row_number"] < arrived].set_index("row_number").clean_query
    exact = staged["query"].reindex(expected.index).eq(expected)
    rows = []
    for defect, (rule, flag) in SEARCH_REPAIRS.items():
        injected = set(truth[(truth.table == "searches") & (truth.defect_class == defect)].row_number)
        flagged = set(staged.index[staged[flag]])
        repaired = {row for row in injected if exact.get(row, False) and staged.kept.get(row, False)}
        rows.append(
            dict(
                table="searches",
                defect_class=defect,
                column="query",
                rule_code=rule,
                injected=len(injected),
                caught=len(repaired),
                flagged=len(flagged),
                false_flags=len(flagged - injected),
            )
        )
    rows.append(
        dict(
            table="searches",
            defect_class="(query normal form)",
            column="query",
            rule_code="normalise_query",
            injected=len(expected),
            caught=int(exact.sum()),
            flagged=len(expected),
            false_flags=0,
        )
    )
    return rows


def defect_scorecard(settings: Settings) -> pd.DataFrame:
    """One row per defect class: injected, caught, flagged, precision and recall (1.0 is the target).

    Also one `clean rows` row per table: how many rows without any injected defect were quarantined
    anyway (its precision is 1.0 only when none were).
    """
    truth, titles, descs = _truth(settings.resolved_raw_path)
    flagged = tables.read(
        settings,
        "select q.relation, q.source_file, q.source_row_number, r.rule_code from fct_quarantine_rules as r"
        " inner join fct_quarantine as q on r.row_key = q.row_key",
    )
    offsets, arrived = _file_offsets(settings.resolved_raw_path, settings.raw_format)
    truth = truth[truth["row_number"] < truth["table"].map(arrived).fillna(0)]
    flagged["source_row_number"] = _shop_rows(flagged, offsets)
    scored = {"events", "items", "users"} | ({"searches"} if has_search_log(settings) else set())
    rows = _quarantine_rows(truth, flagged, scored)
    rows += _repair_rows(settings, truth, titles, descs)
    if "searches" in scored:
        rows += _search_repair_rows(settings, truth, offsets, arrived["searches"])
    quarantined = tables.read(settings, "select relation, source_file, source_row_number from fct_quarantine")
    quarantined["source_row_number"] = _shop_rows(quarantined, offsets)
    for table in sorted(scored):
        defective = set(truth[(truth.table == table) & (truth.expected == "quarantine")].row_number)
        held = set(quarantined[quarantined.relation == table].source_row_number)
        rows.append(
            dict(
                table=table,
                defect_class="(clean rows)",
                column="*",
                rule_code="any",
                injected=len(defective),
                caught=len(defective & held),
                flagged=len(held),
                false_flags=len(held - defective),
            )
        )
    card = pd.DataFrame(rows, columns=SCORECARD_COLUMNS)
    card["recall"] = (card.caught / card.injected).where(card.injected > 0, 1.0)
    card["precision"] = ((card.flagged - card.false_flags) / card.flagged).where(card.flagged > 0, 1.0)
    return card
