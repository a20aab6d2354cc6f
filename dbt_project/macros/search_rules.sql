{#-
  The search log's text rules and common rules, defined once. Staging normalises every query with
  normalise_query (the one normal form: the `query` entity Feast keys on, and what the live search
  server must reproduce; scoring/search/query.py is its Python twin, tested against this SQL), and
  int_searches_checked labels every staged search row with common_search_rules.
-#}

{#- Full-width forms (U+FF01..U+FF5E, as East Asian keyboards type them) and their ASCII letters: the part
    of Unicode's NFKC folding that matters in a search box, since DuckDB has NFC only. -#}
{% macro fullwidth_forms() -%}！＂＃＄％＆＇（）＊＋，－．／０１２３４５６７８９：；＜＝＞？＠ＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＸＹＺ［＼］＾＿｀ａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒｓｔｕｖｗｘｙｚ｛｜｝～{%- endmacro %}
{% macro ascii_forms() -%}!"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefghijklmnopqrstuvwxyz{|}~{%- endmacro %}

{#- Anything that separates words: ASCII controls and spaces, no-break and other Unicode spaces, zero-width
    space and the byte-order mark. Each becomes one plain space. -#}
{% macro query_space_pattern() -%}[\x{0000}-\x{0020}\x{007F}-\x{00A0}\x{1680}\x{2000}-\x{200B}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}\x{FEFF}]{%- endmacro %}

{#- Markup: a script or style element with its content, or any other HTML tag. -#}
{% macro query_markup_pattern() -%}<script[^>]*>.*?</script\s*>|<style[^>]*>.*?</style\s*>|<[^<>]*>{%- endmacro %}

{#- An SQL injection attempt and everything typed after it, from the quote that closes the string: a quoted
    tautology (' or '1'='1), a stacked statement after a quote ('; drop ..., '); delete ...), a union
    select or a comment (--, /*), with or without a quote before them. A quote, a semicolon or an SQL
    word in ordinary text is kept (3' x 6' tile; drop cloth, select pine). -#}
{% macro query_sql_pattern() -%}([''"]\s*\)?\s*(;\s*(drop|delete|insert|update|select|truncate|alter|create|exec|shutdown)\b|(or|and)\s+[''"]?[a-z0-9_]+[''"]?\s*=)|[''"]?\s*(\bunion\s+(all\s+)?select\b|--|/\*)).*${%- endmacro %}

{#- The text before markup is stripped: Unicode folded (NFC, full-width forms to ASCII, accents stripped),
    every space-like character a plain space, common HTML entities decoded, lower case. -#}
{% macro query_folded(expr) -%}
    lower({{ html_unescape(regexp_replace_all(
        unicode_fold('translate(' ~ expr ~ ', ' ~ sql_string(fullwidth_forms()) ~ ', ' ~ sql_string(ascii_forms()) ~ ')'),
        query_space_pattern(), ' ')) }})
{%- endmacro %}

{#- The folded text with markup and SQL injections removed (what the PII check and redaction read). -#}
{% macro query_stripped(expr) -%}
    {{ regexp_replace_all(regexp_replace_all(query_folded(expr), query_markup_pattern(), ' '), query_sql_pattern(), '') }}
{%- endmacro %}

{#- The normal form of a query: folded, markup stripped, PII redacted ([email], [phone]), inner whitespace
    collapsed, trimmed; null when nothing is left. -#}
{% macro normalise_query(expr) -%}
    nullif(trim({{ regexp_replace_all(redact_pii(query_stripped(expr)), ' +', ' ') }}), '')
{%- endmacro %}

{#- True when stripping removed markup or an SQL injection (rule markup_in_query, a repair). -#}
{% macro query_had_markup(expr) -%}
    coalesce({{ query_folded(expr) }} <> {{ query_stripped(expr) }}, false)
{%- endmacro %}

{#- (code, condition) of every common search rule, over `searches` (the staged rows) left-joined to
    `user_days` (distinct searches per user and day), `catalogue` (clean items) and cross-joined to
    `catalogue_supplied`. -#}
{% macro common_search_rules() -%}
    {{ return([
        ('duplicate_row', 'searches.occurrence > 1'),
        ('empty_query', 'searches.query is null'),
        ('oversized_query', 'searches.query_chars > ' ~ (var('max_query_chars') | int)),
        ('malformed_timestamp', 'searches.searched_at is null'),
        ('bot_traffic', 'user_days.searches > ' ~ (var('bot_searches_per_day') | int)),
        ('unknown_item', 'catalogue_supplied.has_catalogue and searches.item_id is not null and catalogue.item_id is null'),
        ('future_timestamp', 'searches.searched_at > current_timestamp'),
        ('after_as_of', 'searches.searched_at >= ' ~ as_of_timestamp()),
    ]) }}
{%- endmacro %}

{#- The snapshot a search counts in: the Monday after its week, or the day after the last search for the
    searches of the last (partial) week, so no snapshot is stamped later than the data it summarises. A
    snapshot at T then counts only searches strictly before T (fct_item_stats' rule, for the search marts). -#}
{% macro search_snapshot_on(ts, last_day) -%}
    least(cast({{ plus_days(week_start(ts), 7) }} as date), {{ last_day }})
{%- endmacro %}
