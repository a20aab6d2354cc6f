{#-
  What running on Spark (dbt-spark, AISLE_ENGINE=spark) needs beyond the spark__ versions of the
  portability macros: the raw files as tables, the marts as Parquet folders, and an incremental strategy
  that Parquet tables support. Each is a no-op, or DuckDB's own choice, on DuckDB.
-#}

{#- The contract columns of each canonical raw table (scoring/ingest/raw_contract.py), in file order: the
    staging models read them, and Spark declares them on the raw tables. -#}
{% macro canonical_columns(table) -%}
    {{ return({
        'events': ['user_id', 'item_id', 'event_type', 'event_at', 'quantity', 'unit_price', 'order_id', 'country', 'title'],
        'items': ['item_id', 'title', 'description', 'category', 'brand', 'price'],
        'users': ['user_id', 'email', 'phone', 'full_name', 'country', 'signed_up_at'],
        'searches': ['search_id', 'user_id', 'query', 'searched_at', 'item_id', 'action', 'position'],
    }[table]) }}
{%- endmacro %}

{#- on-run-start: make the canonical raw files readable as the sources name them (shop.<table>). DuckDB
    reads them through the sources' external_location, so nothing to do there. -#}
{% macro register_raw_files() -%}{{ return(adapter.dispatch('register_raw_files', 'aisle')()) }}{%- endmacro %}
{% macro default__register_raw_files() -%}{{ return('') }}{%- endmacro %}

{#- On Spark each table is an external table over the raw folder, filtered to the table's initial file and
    dated drops (the glob of canonical_raw_glob; _pending/ and _truth/ are hidden folders Spark never
    lists), with every contract column declared as text: a column the files lack reads as null and a
    table with no file reads as no rows, without Spark failing to infer a schema from nothing. A view on
    top adds each row's file and, for Parquet, its row number in the file (DuckDB's filename and
    file_row_number). The tables hold no data, so they are recreated on every run. -#}
{% macro spark__register_raw_files() -%}
    {%- if execute and uses_canonical_files() -%}
        {%- set csv = env_var('AISLE_RAW_FORMAT', 'parquet') == 'csv' -%}
        {%- set extension = 'csv' if csv else 'parquet' -%}
        {%- do run_query('create database if not exists shop') -%}
        {%- for table in ['events', 'items', 'users', 'searches'] -%}
            {%- do run_query('drop view if exists shop.' ~ table) -%}
            {%- do run_query('drop table if exists shop.' ~ table ~ '_files') -%}
            {%- call statement('register_' ~ table) -%}
                create table shop.{{ table }}_files (
                    {%- for c in canonical_columns(table) %}{{ c }} string{% if not loop.last %}, {% endif %}{% endfor -%}
                )
                using {{ extension }}
                options (
                    path {{ sql_string(env_var('AISLE_RAW_PATH', '../data/raw/demo')) }},
                    pathGlobFilter '{{ '{' ~ table ~ '.*' ~ extension ~ ',' ~ table ~ '-*' ~ extension ~ '}' }}'
                    {%- if csv %}, header 'true'{% endif %}
                )
            {%- endcall -%}
            {%- call statement('view_' ~ table) -%}
                create view shop.{{ table }} as
                select *, _metadata.file_path as filename
                    {%- if not csv %}, _metadata.row_index as file_row_number{% endif %}
                from shop.{{ table }}_files
            {%- endcall -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return('') }}
{%- endmacro %}

{#- The incremental staging models only ever add the rows of files not loaded yet (raw_rows), so their
    new rows never share a row_key with old ones. DuckDB deletes and inserts by row_key; Spark's Parquet
    tables cannot delete, and appending is the same result. -#}
{% macro raw_incremental_strategy() -%}{{ return(adapter.dispatch('raw_incremental_strategy', 'aisle')()) }}{%- endmacro %}
{% macro default__raw_incremental_strategy() -%}{{ return('delete+insert') }}{%- endmacro %}
{% macro spark__raw_incremental_strategy() -%}{{ return('append') }}{%- endmacro %}

{#- dbt-duckdb's `external` materialization writes a mart as one Parquet file under AISLE_MARTS_DIR. On
    Spark an external mart is a table whose data is a Parquet folder AISLE_MARTS_DIR/<model>/ (the marts'
    file_format and location_root in dbt_project.yml): dbt-spark's table materialization builds it. -#}
{% materialization external, adapter='spark' %}
    {{ return(materialization_table_spark()) }}
{% endmaterialization %}

{#- dbt-spark's seed loader binds each value as '<value>' without escaping, so a quote in a seed's text
    (rules.csv: "the item's median price") breaks the insert: write each value as a proper literal. -#}
{% macro spark__load_csv_rows(model, agate_table) %}
    {%- set column_override = model['config'].get('column_types', {}) -%}
    {%- set statements = [] -%}
    {%- for chunk in agate_table.rows | batch(get_batch_size()) -%}
        {%- set sql -%}
            insert into {{ this.render() }} values
            {% for row in chunk -%}
                ({%- for value in row -%}
                    {%- set type = column_override.get(agate_table.column_names[loop.index0], adapter.convert_type(agate_table, loop.index0)) -%}
                    cast({{ 'null' if value is none else sql_string(value | string) }} as {{ type }})
                    {%- if not loop.last %}, {% endif -%}
                {%- endfor -%})
                {%- if not loop.last %},{% endif %}
            {% endfor %}
        {%- endset -%}
        {%- do adapter.add_query(sql, abridge_sql_log=True) -%}
        {%- if loop.first -%}{%- do statements.append(sql) -%}{%- endif -%}
    {%- endfor -%}
    {{ return(statements[0]) }}
{% endmacro %}

{#- A model contract's column types are written as DuckDB names them (varchar, bigint[]); Spark spells
    them string and array<bigint>. dbt compares the contract with the built columns through this empty
    query, so translating the names here makes the same contracts hold on Spark. -#}
{% macro spark__get_empty_schema_sql(columns) -%}
    select
    {% for name in columns -%}
        {%- set data_type = columns[name]['data_type'] | trim | lower -%}
        {%- set element = data_type[:-2] if data_type.endswith('[]') else data_type -%}
        {%- set element = 'string' if element == 'varchar' else element -%}
        cast(null as {{ 'array<' ~ element ~ '>' if data_type.endswith('[]') else element }}) as {{ columns[name]['name'] }}
        {%- if not loop.last %}, {% endif %}
    {% endfor %}
{%- endmacro %}
