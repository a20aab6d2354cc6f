{#-
  Every piece of engine-specific SQL lives here, behind adapter.dispatch, so the models stay portable.
  A Spark, Databricks, BigQuery or Snowflake adapter needs one `<adapter>__<macro>` per macro below;
  the README lists them.
-#}

{# A value parsed to a type, or null when it does not parse (never an error). #}
{% macro try_cast(expr, type) -%}{{ return(adapter.dispatch('try_cast', 'aisle')(expr, type)) }}{%- endmacro %}
{% macro default__try_cast(expr, type) -%}try_cast({{ expr }} as {{ type }}){%- endmacro %}
{% macro bigquery__try_cast(expr, type) -%}safe_cast({{ expr }} as {{ type }}){%- endmacro %}

{# A timestamp parsed from the formats raw exports use, or null. #}
{% macro try_parse_timestamp(expr) -%}{{ return(adapter.dispatch('try_parse_timestamp', 'aisle')(expr)) }}{%- endmacro %}
{% macro default__try_parse_timestamp(expr) -%}try_cast({{ expr }} as timestamp){%- endmacro %}
{% macro duckdb__try_parse_timestamp(expr) -%}
    coalesce(
        try_strptime({{ expr }}, '%Y-%m-%d %H:%M:%S'),
        try_strptime({{ expr }}, '%Y-%m-%dT%H:%M:%S'),
        try_strptime({{ expr }}, '%Y-%m-%d %H:%M'),
        try_strptime({{ expr }}, '%Y-%m-%d')
    )
{%- endmacro %}

{# A stable hex digest of text, for row identities and hashed PII. #}
{% macro hash_text(expr) -%}{{ return(adapter.dispatch('hash_text', 'aisle')(expr)) }}{%- endmacro %}
{% macro default__hash_text(expr) -%}sha256({{ expr }}){%- endmacro %}
{% macro spark__hash_text(expr) -%}sha2({{ expr }}, 256){%- endmacro %}

{# The raw values of a row as one JSON text, kept in the quarantine as the offending values. #}
{# Each column c is read from c_raw, the raw text the staging models keep, with every e-mail address #}
{# and phone number in it redacted (redact_pii), so the quarantine never holds PII. #}
{% macro row_to_json(columns) -%}{{ return(adapter.dispatch('row_to_json', 'aisle')(columns)) }}{%- endmacro %}
{% macro duckdb__row_to_json(columns) -%}
    cast(to_json(struct_pack(
        {%- for c in columns %}"{{ c }}" := {{ redact_pii((c | lower) ~ '_raw') }}{% if not loop.last %}, {% endif %}{% endfor -%}
    )) as varchar)
{%- endmacro %}
{% macro spark__row_to_json(columns) -%}
    to_json(named_struct({%- for c in columns %}'{{ c }}', {{ redact_pii((c | lower) ~ '_raw') }}{% if not loop.last %}, {% endif %}{% endfor -%}))
{%- endmacro %}

{# Regular expressions: does it match, and replace every match. #}
{% macro regexp_matches(expr, pattern) -%}{{ return(adapter.dispatch('regexp_matches', 'aisle')(expr, pattern)) }}{%- endmacro %}
{% macro duckdb__regexp_matches(expr, pattern) -%}regexp_matches({{ expr }}, '{{ pattern }}'){%- endmacro %}
{% macro spark__regexp_matches(expr, pattern) -%}({{ expr }} rlike '{{ pattern }}'){%- endmacro %}

{% macro regexp_replace_all(expr, pattern, replacement) -%}
    {{ return(adapter.dispatch('regexp_replace_all', 'aisle')(expr, pattern, replacement)) }}
{%- endmacro %}
{% macro duckdb__regexp_replace_all(expr, pattern, replacement) -%}
    regexp_replace({{ expr }}, '{{ pattern }}', '{{ replacement }}', 'g')
{%- endmacro %}

{# Title Case ("RED  ceramic mug" -> "Red Ceramic Mug"); DuckDB has no initcap. #}
{% macro title_case(expr) -%}{{ return(adapter.dispatch('title_case', 'aisle')(expr)) }}{%- endmacro %}
{% macro default__title_case(expr) -%}initcap({{ expr }}){%- endmacro %}
{% macro duckdb__title_case(expr) -%}
    array_to_string(
        list_transform(string_split(lower({{ expr }}), ' '), lambda w: upper(w[1]) || w[2:]), ' '
    )
{%- endmacro %}

{# Rule codes that fired, as one comma-separated text (nulls skipped). #}
{% macro rule_codes(checks) -%}
    nullif(concat_ws(','{% for code, condition in checks %}, case when {{ condition }} then '{{ code }}' end{% endfor %}), '')
{%- endmacro %}

{# One row per rule code of a comma-separated list. #}
{% macro explode_codes(expr) -%}{{ return(adapter.dispatch('explode_codes', 'aisle')(expr)) }}{%- endmacro %}
{% macro duckdb__explode_codes(expr) -%}unnest(string_split({{ expr }}, ',')){%- endmacro %}
{% macro spark__explode_codes(expr) -%}explode(split({{ expr }}, ',')){%- endmacro %}

{# An ordered list of values (a user's recent items). #}
{% macro ordered_list_agg(expr, order_by) -%}
    {{ return(adapter.dispatch('ordered_list_agg', 'aisle')(expr, order_by)) }}
{%- endmacro %}
{% macro duckdb__ordered_list_agg(expr, order_by) -%}list({{ expr }} order by {{ order_by }}){%- endmacro %}
{% macro bigquery__ordered_list_agg(expr, order_by) -%}array_agg({{ expr }} order by {{ order_by }}){%- endmacro %}

{# Whole days between two timestamps. #}
{% macro days_between(start, end) -%}{{ return(adapter.dispatch('days_between', 'aisle')(start, end)) }}{%- endmacro %}
{% macro duckdb__days_between(start, end) -%}date_diff('day', {{ start }}, {{ end }}){%- endmacro %}
{% macro spark__days_between(start, end) -%}datediff({{ end }}, {{ start }}){%- endmacro %}

{# A timestamp moved back by a number of days. #}
{% macro minus_days(ts, days) -%}{{ return(adapter.dispatch('minus_days', 'aisle')(ts, days)) }}{%- endmacro %}
{% macro default__minus_days(ts, days) -%}({{ ts }} - interval '{{ days }} days'){%- endmacro %}

{# A timestamp or date moved forward by a number of days. #}
{% macro plus_days(ts, days) -%}{{ return(adapter.dispatch('plus_days', 'aisle')(ts, days)) }}{%- endmacro %}
{% macro default__plus_days(ts, days) -%}({{ ts }} + interval '{{ days }} days'){%- endmacro %}

{# The first day of the week of a timestamp (weekly feature snapshots). #}
{% macro week_start(ts) -%}{{ return(adapter.dispatch('week_start', 'aisle')(ts)) }}{%- endmacro %}
{% macro default__week_start(ts) -%}date_trunc('week', {{ ts }}){%- endmacro %}

{# The median of a numeric column, as an aggregate. #}
{% macro median(expr) -%}{{ return(adapter.dispatch('median', 'aisle')(expr)) }}{%- endmacro %}
{% macro default__median(expr) -%}percentile_cont(0.5) within group (order by {{ expr }}){%- endmacro %}
{% macro duckdb__median(expr) -%}median({{ expr }}){%- endmacro %}
{% macro spark__median(expr) -%}percentile_approx({{ expr }}, 0.5){%- endmacro %}

{# The position of each row in the scan of its raw relation, 0-based (raw_rows makes it per file). #}
{% macro source_row_number() -%}{{ return(adapter.dispatch('source_row_number', 'aisle')()) }}{%- endmacro %}
{% macro default__source_row_number() -%}(row_number() over () - 1){%- endmacro %}

{# Common HTML entities in scraped or exported text, back to characters. Portable SQL. #}
{% macro html_unescape(expr) -%}
    replace(replace(replace(replace(replace(replace({{ expr }},
        '&quot;', '"'), '&#39;', ''''), '&apos;', ''''), '&lt;', '<'), '&gt;', '>'), '&amp;', '&')
{%- endmacro %}

{# The first match of a pattern's first group, or null. #}
{% macro regexp_extract(expr, pattern) -%}{{ return(adapter.dispatch('regexp_extract', 'aisle')(expr, pattern)) }}{%- endmacro %}
{% macro default__regexp_extract(expr, pattern) -%}nullif(regexp_extract({{ expr }}, '{{ pattern }}', 1), ''){%- endmacro %}

{# Seconds since 1970 (Feast's Unix timestamps). #}
{% macro epoch_seconds(ts) -%}{{ return(adapter.dispatch('epoch_seconds', 'aisle')(ts)) }}{%- endmacro %}
{% macro duckdb__epoch_seconds(ts) -%}cast(epoch({{ ts }}) as bigint){%- endmacro %}
{% macro spark__epoch_seconds(ts) -%}unix_timestamp({{ ts }}){%- endmacro %}

{# Unicode folding of search queries: NFC composition, then every combining mark (accent) stripped. #}
{# Engines without a Unicode normaliser leave the text as it is (queries then differ only in accents). #}
{% macro unicode_fold(expr) -%}{{ return(adapter.dispatch('unicode_fold', 'aisle')(expr)) }}{%- endmacro %}
{% macro default__unicode_fold(expr) -%}{{ expr }}{%- endmacro %}
{% macro duckdb__unicode_fold(expr) -%}strip_accents(nfc_normalize({{ expr }})){%- endmacro %}

{# The name of a file without its folder (the raw file a row arrived in). #}
{% macro file_name(expr) -%}{{ return(adapter.dispatch('file_name', 'aisle')(expr)) }}{%- endmacro %}
{% macro default__file_name(expr) -%}regexp_extract({{ expr }}, '[^/]*$', 0){%- endmacro %}
{% macro duckdb__file_name(expr) -%}parse_filename({{ expr }}){%- endmacro %}
