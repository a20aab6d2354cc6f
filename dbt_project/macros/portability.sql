{#-
  Every piece of engine-specific SQL lives here, behind adapter.dispatch, so the models stay portable.
  A Spark, Databricks, BigQuery or Snowflake adapter needs one `<adapter>__<macro>` per macro below;
  the README lists them.
-#}

{# A value parsed to a type, or null when it does not parse (never an error). #}
{% macro try_cast(expr, type) -%}{{ return(adapter.dispatch('try_cast', 'aisle')(expr, type)) }}{%- endmacro %}
{% macro default__try_cast(expr, type) -%}try_cast({{ expr }} as {{ type }}){%- endmacro %}
{% macro bigquery__try_cast(expr, type) -%}safe_cast({{ expr }} as {{ type }}){%- endmacro %}
{% macro spark__try_cast(expr, type) -%}try_cast({{ expr }} as {{ type }}){%- endmacro %}

{#- The text type for casts: Spark rejects a varchar without a length. -#}
{% macro text_type() -%}{{ return(adapter.dispatch('text_type', 'aisle')()) }}{%- endmacro %}
{% macro default__text_type() -%}{{ return('varchar') }}{%- endmacro %}
{% macro spark__text_type() -%}{{ return('string') }}{%- endmacro %}

{#- A string literal of any text. DuckDB doubles a quote and takes backslashes as they are; Spark reads
    '' as two adjacent literals (so the quote vanishes) and unescapes backslashes, so it needs \' and \\. -#}
{% macro sql_string(text) -%}{{ return(adapter.dispatch('sql_string', 'aisle')(text)) }}{%- endmacro %}
{% macro default__sql_string(text) -%}{{ return("'" ~ (text | replace("'", "''")) ~ "'") }}{%- endmacro %}
{% macro spark__sql_string(text) -%}
    {{ return("'" ~ (text | replace('\\', '\\\\') | replace("'", "\\'")) ~ "'") }}
{%- endmacro %}

{#- A regular expression written as the text of a DuckDB literal (a quote doubled), as a Spark literal. -#}
{% macro spark_pattern(pattern) -%}{{ return(spark__sql_string(pattern | replace("''", "'"))) }}{%- endmacro %}

{# An empty list of one element type. #}
{% macro empty_list(element_type) -%}{{ return(adapter.dispatch('empty_list', 'aisle')(element_type)) }}{%- endmacro %}
{% macro default__empty_list(element_type) -%}cast([] as {{ element_type }}[]){%- endmacro %}
{% macro spark__empty_list(element_type) -%}cast(array() as array<{{ element_type }}>){%- endmacro %}

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
{% macro spark__try_parse_timestamp(expr) -%}
    coalesce(
        try_to_timestamp({{ expr }}, 'yyyy-MM-dd HH:mm:ss'),
        try_to_timestamp({{ expr }}, {{ spark__sql_string("yyyy-MM-dd'T'HH:mm:ss") }}),
        try_to_timestamp({{ expr }}, 'yyyy-MM-dd HH:mm'),
        try_to_timestamp({{ expr }}, 'yyyy-MM-dd')
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
{#- Spark's to_json leaves out null fields unless told; DuckDB's keeps them as null. -#}
{% macro spark__row_to_json(columns) -%}
    to_json(named_struct({%- for c in columns %}'{{ c }}', {{ redact_pii((c | lower) ~ '_raw') }}{% if not loop.last %}, {% endif %}{% endfor -%}), map('ignoreNullFields', 'false'))
{%- endmacro %}

{# Regular expressions: does it match, and replace every match. #}
{% macro regexp_matches(expr, pattern) -%}{{ return(adapter.dispatch('regexp_matches', 'aisle')(expr, pattern)) }}{%- endmacro %}
{% macro duckdb__regexp_matches(expr, pattern) -%}regexp_matches({{ expr }}, '{{ pattern }}'){%- endmacro %}
{% macro spark__regexp_matches(expr, pattern) -%}({{ expr }} rlike {{ spark_pattern(pattern) }}){%- endmacro %}

{% macro regexp_replace_all(expr, pattern, replacement) -%}
    {{ return(adapter.dispatch('regexp_replace_all', 'aisle')(expr, pattern, replacement)) }}
{%- endmacro %}
{% macro duckdb__regexp_replace_all(expr, pattern, replacement) -%}
    regexp_replace({{ expr }}, '{{ pattern }}', '{{ replacement }}', 'g')
{%- endmacro %}
{% macro spark__regexp_replace_all(expr, pattern, replacement) -%}
    regexp_replace({{ expr }}, {{ spark_pattern(pattern) }}, {{ spark_pattern(replacement) }})
{%- endmacro %}

{# Title Case ("RED  ceramic mug" -> "Red Ceramic Mug"); DuckDB has no initcap. #}
{% macro title_case(expr) -%}{{ return(adapter.dispatch('title_case', 'aisle')(expr)) }}{%- endmacro %}
{% macro default__title_case(expr) -%}initcap({{ expr }}){%- endmacro %}
{% macro spark__title_case(expr) -%}initcap({{ expr }}){%- endmacro %}
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
{#- Spark's collect_list has no order: sort (key, value) pairs by the key, then keep the values. -#}
{% macro spark__ordered_list_agg(expr, order_by) -%}
    transform(array_sort(collect_list(struct({{ order_by }} as sort_key, {{ expr }} as value))), pair -> pair.value)
{%- endmacro %}

{# Whole days between two timestamps. #}
{% macro days_between(start, end) -%}{{ return(adapter.dispatch('days_between', 'aisle')(start, end)) }}{%- endmacro %}
{% macro duckdb__days_between(start, end) -%}date_diff('day', {{ start }}, {{ end }}){%- endmacro %}
{% macro spark__days_between(start, end) -%}datediff({{ end }}, {{ start }}){%- endmacro %}

{# A timestamp moved back by a number of days. #}
{% macro minus_days(ts, days) -%}{{ return(adapter.dispatch('minus_days', 'aisle')(ts, days)) }}{%- endmacro %}
{% macro default__minus_days(ts, days) -%}({{ ts }} - interval '{{ days }} days'){%- endmacro %}
{% macro spark__minus_days(ts, days) -%}({{ ts }} - make_interval(0, 0, 0, {{ days }})){%- endmacro %}

{# A timestamp or date moved forward by a number of days. #}
{% macro plus_days(ts, days) -%}{{ return(adapter.dispatch('plus_days', 'aisle')(ts, days)) }}{%- endmacro %}
{% macro default__plus_days(ts, days) -%}({{ ts }} + interval '{{ days }} days'){%- endmacro %}
{% macro spark__plus_days(ts, days) -%}({{ ts }} + make_interval(0, 0, 0, {{ days }})){%- endmacro %}

{# The first day of the week of a timestamp (weekly feature snapshots). #}
{% macro week_start(ts) -%}{{ return(adapter.dispatch('week_start', 'aisle')(ts)) }}{%- endmacro %}
{% macro default__week_start(ts) -%}date_trunc('week', {{ ts }}){%- endmacro %}
{% macro spark__week_start(ts) -%}date_trunc('week', {{ ts }}){%- endmacro %}

{# The median of a price column (two decimal places), as an aggregate. #}
{% macro median(expr) -%}{{ return(adapter.dispatch('median', 'aisle')(expr)) }}{%- endmacro %}
{% macro default__median(expr) -%}percentile_cont(0.5) within group (order by {{ expr }}){%- endmacro %}
{% macro duckdb__median(expr) -%}median({{ expr }}){%- endmacro %}
{#- Exact (percentile, not percentile_approx), and in cents as DuckDB takes the median of a price (a
    decimal with two places): the midpoint of two prices in whole cents, truncated (4.27 and 4.30 -> 4.28),
    so the price rule and dim_items agree on both engines. -#}
{% macro spark__median(expr) -%}(floor(percentile({{ expr }} * 100, 0.5)) / 100){%- endmacro %}

{# The position of each row in the scan of its raw relation, 0-based (raw_rows makes it per file). #}
{% macro source_row_number() -%}{{ return(adapter.dispatch('source_row_number', 'aisle')()) }}{%- endmacro %}
{% macro default__source_row_number() -%}(row_number() over () - 1){%- endmacro %}
{#- Spark's window needs an order: the scan order, by monotonically_increasing_id (per partition, in file
    order). raw_rows reads file_row_number instead where the reader gives one (Parquet on Spark does). -#}
{% macro spark__source_row_number() -%}(row_number() over (order by monotonically_increasing_id()) - 1){%- endmacro %}

{# Common HTML entities in scraped or exported text, back to characters. Portable SQL. #}
{% macro html_unescape(expr) -%}
    replace(replace(replace(replace(replace(replace({{ expr }},
        '&quot;', '"'), '&#39;', {{ sql_string("'") }}), '&apos;', {{ sql_string("'") }}), '&lt;', '<'), '&gt;', '>'), '&amp;', '&')
{%- endmacro %}

{# The first match of a pattern's first group, or null. #}
{% macro regexp_extract(expr, pattern) -%}{{ return(adapter.dispatch('regexp_extract', 'aisle')(expr, pattern)) }}{%- endmacro %}
{% macro default__regexp_extract(expr, pattern) -%}nullif(regexp_extract({{ expr }}, '{{ pattern }}', 1), ''){%- endmacro %}
{% macro spark__regexp_extract(expr, pattern) -%}nullif(regexp_extract({{ expr }}, {{ spark_pattern(pattern) }}, 1), ''){%- endmacro %}

{# Seconds since 1970 (Feast's Unix timestamps). #}
{% macro epoch_seconds(ts) -%}{{ return(adapter.dispatch('epoch_seconds', 'aisle')(ts)) }}{%- endmacro %}
{% macro duckdb__epoch_seconds(ts) -%}cast(epoch({{ ts }}) as bigint){%- endmacro %}
{% macro spark__epoch_seconds(ts) -%}unix_timestamp({{ ts }}){%- endmacro %}

{# Unicode folding of search queries: NFC composition, then every combining mark (accent) stripped. #}
{# Engines without a Unicode normaliser leave the text as it is (queries then differ only in accents). #}
{% macro unicode_fold(expr) -%}{{ return(adapter.dispatch('unicode_fold', 'aisle')(expr)) }}{%- endmacro %}
{% macro default__unicode_fold(expr) -%}{{ expr }}{%- endmacro %}
{% macro duckdb__unicode_fold(expr) -%}strip_accents(nfc_normalize({{ expr }})){%- endmacro %}
{#- Spark has neither: commons-lang3 (on Spark's classpath) decomposes and strips the combining marks.
    java_method turns a null result into the text 'null', so a null stays null before the call. -#}
{% macro spark__unicode_fold(expr) -%}
    if(({{ expr }}) is null, null, java_method('org.apache.commons.lang3.StringUtils', 'stripAccents', {{ expr }}))
{%- endmacro %}

{# The name of a file without its folder (the raw file a row arrived in). #}
{% macro file_name(expr) -%}{{ return(adapter.dispatch('file_name', 'aisle')(expr)) }}{%- endmacro %}
{% macro default__file_name(expr) -%}regexp_extract({{ expr }}, '[^/]*$', 0){%- endmacro %}
{% macro duckdb__file_name(expr) -%}parse_filename({{ expr }}){%- endmacro %}
{% macro spark__file_name(expr) -%}regexp_extract({{ expr }}, '[^/]*$', 0){%- endmacro %}
