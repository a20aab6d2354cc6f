"""The one normal form of a search query, in Python, identical to dbt's staging (macro `normalise_query`,
dbt_project/macros/search_rules.sql).

Published head results, Feast's `query` entity and the query x item statistics are all keyed by the
normalised query dbt writes, so a query typed at the live engine must reach exactly the same text, or a
head query would miss its precomputed answer and its statistics. Each step below is one of the macro's,
in its order, and the patterns and character lists are read from the macros themselves, so they are
defined once; tests/test_search_pipeline.py compares this function with `stg_searches` on the whole demo
log, and with dbt's compiled macro on hard cases (accents, full-width forms, Unicode spaces, entities,
markup, SQL injections, PII).

Two engine details are reproduced on purpose: regular expressions use ASCII classes (`re.ASCII`),
because DuckDB's engine (RE2) matches `\\s` and `\\b` on ASCII only; and lower case is taken character by
character, because DuckDB maps each code point alone (a final capital sigma becomes 'σ', where Python's
`str.lower` would write 'ς').
"""

from __future__ import annotations

import re
import unicodedata

from scoring.errors import AisleError
from scoring.settings import DBT_DIR


def _macro(file: str, name: str) -> str:
    """The text of a dbt macro that takes no arguments and returns a constant (a pattern or a character
    list), as it reads inside a SQL string literal, so Python uses the SQL's own definition."""
    text = (DBT_DIR / "macros" / file).read_text(encoding="utf-8")
    found = re.search(r"\{%\s*macro\s+" + name + r"\(\)\s*-?%\}(.*?)\{%-?\s*endmacro\s*%\}", text, re.S)
    if found is None:
        raise RuntimeError(f"macro {name}() not found in dbt_project/macros/{file}")
    return found.group(1).replace("''", "'")


def _re2(pattern: str) -> str:
    """RE2's `\\x{HHHH}` escapes in Python's spelling; the rest of these patterns reads the same in both."""
    return re.sub(r"\\x\{([0-9A-Fa-f]{1,6})\}", lambda m: f"\\U{int(m.group(1), 16):08x}", pattern)


# search_rules.sql: full-width forms -> ASCII, space-like characters, markup, SQL injections.
FULLWIDTH = str.maketrans(
    dict(
        zip(
            _macro("search_rules.sql", "fullwidth_forms"),
            _macro("search_rules.sql", "ascii_forms"),
            strict=True,
        )
    )
)
SPACES = re.compile(_re2(_macro("search_rules.sql", "query_space_pattern")), re.ASCII)
MARKUP = re.compile(_re2(_macro("search_rules.sql", "query_markup_pattern")), re.ASCII)
SQL = re.compile(_re2(_macro("search_rules.sql", "query_sql_pattern")), re.ASCII)
# text_rules.sql: e-mail addresses and phone numbers, as staging redacts every free text.
EMAIL = re.compile(_re2(_macro("text_rules.sql", "email_pattern")), re.ASCII)
PHONE = re.compile(_re2(_macro("text_rules.sql", "phone_pattern")), re.ASCII)
# html_unescape() in portability.sql, in its order (&amp; last, so "&amp;lt;" stays "&lt;").
ENTITIES = (("&quot;", '"'), ("&#39;", "'"), ("&apos;", "'"), ("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&"))
RUNS_OF_SPACES = re.compile(" +")
MARKS = frozenset({"Mn", "Mc", "Me"})


class QueryError(AisleError):
    """A query the engine will not answer (empty, oversized, not text); the server answers 422 with it."""


def _fold(text: str) -> str:
    """unicode_fold(): NFC, then every combining mark stripped (DuckDB's strip_accents(nfc_normalize()))."""
    decomposed = unicodedata.normalize("NFD", text)
    kept = "".join(c for c in decomposed if unicodedata.category(c) not in MARKS)
    return unicodedata.normalize("NFC", kept)


def _lower(text: str) -> str:
    """DuckDB's lower(): each code point's own lower case."""
    return text.lower() if text.isascii() else "".join(c.lower() for c in text)


def folded(text: str) -> str:
    """query_folded(): full-width forms to ASCII, Unicode folded, spaces unified, entities decoded, lower."""
    text = SPACES.sub(" ", _fold(text.translate(FULLWIDTH)))
    for entity, character in ENTITIES:
        text = text.replace(entity, character)
    return _lower(text)


def stripped(text: str) -> str:
    """query_stripped(): the folded text without markup and without an SQL injection's tail."""
    return SQL.sub("", MARKUP.sub(" ", folded(text)))


def normalise(text: str) -> str:
    """The query as staging stores it (normalise_query); '' where staging writes null."""
    redacted = PHONE.sub("[phone]", EMAIL.sub("[email]", stripped(text)))
    return RUNS_OF_SPACES.sub(" ", redacted).strip(" ")


def checked(text: object, max_chars: int) -> str:
    """The normalised query, or QueryError saying what is wrong with what was typed."""
    if not isinstance(text, str):
        raise QueryError(f"`query` must be a string, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError("the query is not valid UTF-8 text (it holds a lone surrogate)") from None
    chars = len(text.strip(" "))  # staging's query_chars: length(trim(query)), in code points
    if chars > max_chars:
        raise QueryError(
            f"the query is {chars:,} characters; the limit is {max_chars:,} (AISLE_MAX_QUERY_CHARS)"
        )
    query = normalise(text)
    if not query:
        raise QueryError("the query is empty once normalised (only spaces or markup): type some words")
    return query
