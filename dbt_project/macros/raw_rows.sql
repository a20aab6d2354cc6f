{#- Helpers shared by every adapter's staging model: raw columns as trimmed text, the row identity,
    and the duplicate occurrence number. -#}

{#- Which columns the raw table really has: the canonical contract makes some columns and the items and
    users tables optional (scoring/ingest/raw_contract.py checks the rest before dbt runs). A missing optional
    column reads as null; a missing table (`table` named) reads as no rows. Returns {'exists': bool,
    'columns': [...]}, column names lower case, with the reader's filename and file_row_number where the
    source declares them. Unit tests (whose raw inputs are fixtures, not files) see every column. -#}
{% macro raw_layout(relation, table, columns) -%}
    {%- set everything = {'exists': true, 'columns': columns | map('lower') | list} -%}
    {%- if not execute or relation.is_cte -%}{{ return(everything) }}{%- endif -%}
    {%- if table is not none and not raw_table_exists(table) -%}{{ return({'exists': false, 'columns': []}) }}{%- endif -%}
    {{ return({'exists': true, 'columns': raw_relation_columns(relation)}) }}
{%- endmacro %}

{#- The files of a canonical raw table: the optional initial file <table>.<ext> and the dated drops
    <table>-YYYY-MM-DD.<ext> (scoring/ingest/arrivals.py), as one glob; mirrors the external_location in
    models/staging/shop/_shop__sources.yml. -#}
{% macro canonical_raw_glob(table) -%}
    {%- set extension = 'csv' if env_var('AISLE_RAW_FORMAT', 'parquet') == 'csv' else 'parquet' -%}
    {{ return(env_var('AISLE_RAW_PATH', '../data/raw/demo') ~ '/' ~ table ~ '[.-]*' ~ extension) }}
{%- endmacro %}

{# True when a canonical raw table has a file, initial or dropped (always true while dbt parses). #}
{% macro raw_table_exists(table) -%}
    {%- if not execute -%}{{ return(true) }}{%- endif -%}
    {{ return(adapter.dispatch('raw_file_exists', 'aisle')(canonical_raw_glob(table), table)) }}
{%- endmacro %}
{#- Elsewhere the raw tables are external tables, taken as present. -#}
{% macro default__raw_file_exists(path, table) -%}{{ return(true) }}{%- endmacro %}
{% macro duckdb__raw_file_exists(path, table) -%}
    {%- set found = run_query("select count(*) from glob('" ~ (path | replace("'", "''")) ~ "')") -%}
    {{ return(found.columns[0].values()[0] > 0) }}
{%- endmacro %}
{#- Spark's raw tables (register_raw_files) read a table with no file as no rows: a table with a row has a
    file. -#}
{% macro spark__raw_file_exists(path, table) -%}
    {%- set found = run_query('select 1 from shop.' ~ table ~ ' limit 1') -%}
    {{ return(found.rows | length > 0) }}
{%- endmacro %}

{# The column names of a raw relation, lower case. #}
{% macro raw_relation_columns(relation) -%}
    {{ return(adapter.dispatch('raw_relation_columns', 'aisle')(relation)) }}
{%- endmacro %}
{% macro default__raw_relation_columns(relation) -%}
    {{ return(adapter.get_columns_in_relation(relation) | map(attribute='name') | map('lower') | list) }}
{%- endmacro %}
{% macro spark__raw_relation_columns(relation) -%}
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
        cast({{ adapter.quote(c) }} as {{ text_type() }})
        {%- else -%}
        cast(null as {{ text_type() }})
        {%- endif %} as {{ c | lower }}_raw{% if not loop.last %},{% endif %}
    {%- endfor %}
{%- endmacro %}

{#- A stable digest of a raw row's values (16 hex digits): the part of the row identity that does not
    depend on where the row sits. Exact duplicates share it and are told apart by their occurrence,
    which is numbered per digest (so two different rows whose digests collided would still get two keys). -#}
{% macro raw_digest(columns) -%}
    {%- set parts = [] -%}
    {%- for c in columns -%}{%- do parts.append("coalesce(" ~ (c | lower) ~ "_raw, '<null>')") -%}{%- endfor -%}
    left({{ hash_text("concat_ws('|', " ~ parts | join(', ') ~ ")") }}, 16)
{%- endmacro %}

{# A stable row identity: the raw digest plus the duplicate occurrence number. #}
{% macro row_key(relation_name) -%}
    '{{ relation_name }}:' || raw_digest || '#' || cast(occurrence as {{ text_type() }})
{%- endmacro %}

{#- The arrival order of a raw file (scoring/ingest/arrivals.py): '' for the initial file, the date of a
    dated drop <table>-YYYY-MM-DD.<ext>, so ordering by it reads the initial file first, then drops by day. -#}
{% macro arrival_order(file_name) -%}
    coalesce({{ regexp_extract(file_name, '-([0-9]{4}-[0-9]{2}-[0-9]{2})[.][^/]*$') }}, '')
{%- endmacro %}

{#- The raw files an incremental model has already loaded (its source_file values), for the model's own
    filter; empty on a full build. -#}
{% macro loaded_raw_files() -%}
    {%- if not execute or not is_incremental() -%}{{ return([]) }}{%- endif -%}
    {%- set loaded = run_query('select distinct source_file from ' ~ this ~ ' where source_file is not null') -%}
    {{ return(loaded.columns[0].values() | list) }}
{%- endmacro %}

{#- Every raw row of a relation as text, with the file it arrived in (source_file, the file name without
    its folder, so a moved raw folder or a copied warehouse still knows what it loaded), its 0-based
    position in that file (source_row_number), its raw digest and its duplicate occurrence number: the
    first step of every staging model. `table` names a canonical table whose file or columns may be
    missing (see raw_layout); leave it out for a source whose columns are all required.

    Occurrences count exact duplicates in arrival order (the initial file, then the drops by date, a day's
    files by name, rows in file order), so a row's key is the same whether its file came in a full build or a later one.
    With `incremental` (an incremental model, on an incremental run) only the files not yet loaded are
    read, the filter a literal list so the engine skips those files unread, and each digest's occurrences
    continue from the highest already loaded: rerunning with no new file reads nothing. -#}
{% macro raw_rows(relation, columns, table=none, incremental=false) -%}
    {%- set layout = raw_layout(relation, table, columns) -%}
    {#- A unit test's raw input is a fixture (a CTE) and its model has no table yet: a full build. -#}
    {%- set continue_occurrences = incremental and not relation.is_cte and is_incremental() -%}
    {%- set loaded = loaded_raw_files() if continue_occurrences else [] -%}
    {%- set has_files = 'filename' in layout.columns -%}
    {%- set source_file = file_name('filename') if has_files else "cast('' as " ~ text_type() ~ ")" -%}
    select
        raw.*,
        {% if continue_occurrences %}coalesce(loaded.max_occurrence, 0) + {% endif -%}
        row_number() over (
            partition by raw.raw_digest order by raw.arrival_order, raw.source_file, raw.source_row_number
        ) as occurrence
    from (
        select *, {{ raw_digest(columns) }} as raw_digest
        from (
            {%- if layout.exists %}
            select
                source_file,
                {{ arrival_order('source_file') }} as arrival_order,
                {%- if 'file_row_number' in layout.columns %}
                cast(file_row_number as bigint) as source_row_number,
                {%- else %}
                scan_row - min(scan_row) over (partition by source_file) as source_row_number,
                {%- endif %}
                {{ raw_text_columns(columns, layout.columns) }}
            from (
                select *, {{ source_file }} as source_file, {{ source_row_number() }} as scan_row
                from {{ relation }}
                {%- if loaded %}
                where {{ source_file }} not in (
                    {%- for f in loaded %}'{{ f | replace("'", "''") }}'{% if not loop.last %}, {% endif %}{% endfor -%}
                )
                {%- endif %}
            ) as scanned
            {%- else %}
            -- {{ table }}: no raw file (an optional table of the contract), so no rows.
            select
                cast(null as {{ text_type() }}) as source_file,
                cast('' as {{ text_type() }}) as arrival_order,
                cast(null as bigint) as source_row_number,
                {{ raw_text_columns(columns, []) }}
            where false
            {%- endif %}
        ) as positioned
    ) as raw
    {%- if continue_occurrences %}
    left join (
        select raw_digest, max(occurrence) as max_occurrence from {{ this }} group by raw_digest
    ) as loaded
        on raw.raw_digest = loaded.raw_digest
    {%- endif %}
{%- endmacro %}
