{#- Helpers shared by every adapter's staging model: raw columns as trimmed text, the row identity,
    and the duplicate occurrence number. -#}

{#- Which columns the raw table really has: the canonical contract makes some columns and the items and
    users tables optional (scoring/ingest/raw_contract.py checks the rest before dbt runs). A missing optional
    column reads as null; a missing table reads as no rows. Returns {'exists': bool, 'columns': [...]},
    column names lower case. Unit tests (whose raw inputs are fixtures, not files) see every column. -#}
{% macro raw_layout(relation, table, columns) -%}
    {%- set everything = {'exists': true, 'columns': columns | map('lower') | list} -%}
    {%- if not execute or table is none or relation.is_cte -%}{{ return(everything) }}{%- endif -%}
    {%- if not raw_table_exists(table) -%}{{ return({'exists': false, 'columns': []}) }}{%- endif -%}
    {{ return({'exists': true, 'columns': raw_relation_columns(relation)}) }}
{%- endmacro %}

{#- The path of a canonical raw file; mirrors the external_location in models/staging/shop/_shop__sources.yml. -#}
{% macro canonical_raw_file(table) -%}
    {%- set extension = 'csv' if env_var('AISLE_RAW_FORMAT', 'parquet') == 'csv' else 'parquet' -%}
    {{ return(env_var('AISLE_RAW_PATH', '../data/raw/demo') ~ '/' ~ table ~ '.' ~ extension) }}
{%- endmacro %}

{# True when the canonical raw file of a table is there (always true while dbt parses). #}
{% macro raw_table_exists(table) -%}
    {%- if not execute -%}{{ return(true) }}{%- endif -%}
    {{ return(adapter.dispatch('raw_file_exists', 'aisle')(canonical_raw_file(table))) }}
{%- endmacro %}
{#- Elsewhere the raw tables are external tables, taken as present. -#}
{% macro default__raw_file_exists(path) -%}{{ return(true) }}{%- endmacro %}
{% macro duckdb__raw_file_exists(path) -%}
    {%- set found = run_query("select count(*) from glob('" ~ (path | replace("'", "''")) ~ "')") -%}
    {{ return(found.columns[0].values()[0] > 0) }}
{%- endmacro %}

{# The column names of a raw relation, lower case. #}
{% macro raw_relation_columns(relation) -%}
    {{ return(adapter.dispatch('raw_relation_columns', 'aisle')(relation)) }}
{%- endmacro %}
{% macro default__raw_relation_columns(relation) -%}
    {{ return(adapter.get_columns_in_relation(relation) | map(attribute='name') | map('lower') | list) }}
{%- endmacro %}
{% macro duckdb__raw_relation_columns(relation) -%}
    {%- set described = run_query('describe select * from ' ~ relation) -%}
    {{ return(described.columns[0].values() | map('lower') | list) }}
{%- endmacro %}

{# Each contract column as text named <column>_raw; a column the file lacks reads as null. #}
{% macro raw_text_columns(columns, present=none) -%}
    {%- for c in columns %}
        {% if present is none or (c | lower) in present -%}
        cast({{ adapter.quote(c) }} as varchar)
        {%- else -%}
        cast(null as varchar)
        {%- endif %} as {{ c | lower }}_raw{% if not loop.last %},{% endif %}
    {%- endfor %}
{%- endmacro %}

{# 1 for the first copy of a raw row, 2 for its first exact duplicate, and so on. #}
{% macro occurrence(columns) -%}
    row_number() over (
        partition by {% for c in columns %}{{ c | lower }}_raw{% if not loop.last %}, {% endif %}{% endfor %}
        order by source_row_number
    )
{%- endmacro %}

{# A stable row identity: a digest of the raw values plus the duplicate occurrence number. #}
{% macro row_key(relation_name, columns) -%}
    {%- set parts = [] -%}
    {%- for c in columns -%}{%- do parts.append("coalesce(" ~ (c | lower) ~ "_raw, '<null>')") -%}{%- endfor -%}
    '{{ relation_name }}:' || left({{ hash_text("concat_ws('|', " ~ parts | join(', ') ~ ")") }}, 16)
        || '#' || cast(occurrence as varchar)
{%- endmacro %}

{#- Every raw row of a relation as text, with its position in the file and its duplicate occurrence
    number: the first step of every staging model. `table` names a canonical table whose file or
    columns may be missing (see raw_layout); leave it out for a source whose columns are all required. -#}
{% macro raw_rows(relation, columns, table=none) -%}
    {%- set layout = raw_layout(relation, table, columns) -%}
    select *, {{ occurrence(columns) }} as occurrence
    from (
        {%- if layout.exists %}
        select
            {{ source_row_number() }} as source_row_number,
            {{ raw_text_columns(columns, layout.columns) }}
        from {{ relation }}
        {%- else %}
        -- {{ table }}: no raw file (an optional table of the contract), so no rows.
        select
            cast(null as bigint) as source_row_number,
            {{ raw_text_columns(columns, []) }}
        where false
        {%- endif %}
    ) as raw
{%- endmacro %}
