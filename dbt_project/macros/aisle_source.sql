{#-
  The raw adapter switch (AISLE_SOURCE: demo | files | online_retail) is read in staging alone: the
  adapters' staging models enable themselves with it, and the thin source-agnostic staging models
  (stg_events, stg_items, stg_users, stg_searches) pick the active adapter's model through adapter_model().
  Intermediate models and marts ref those four names and never ask which source is active. The one other reader is
  raw_relations(), for fct_row_conservation, the documented model that reads the raw sources directly.
-#}

{#- The active raw adapter (AISLE_SOURCE): demo and files both read the canonical contract. -#}
{% macro aisle_source() -%}{{ return(env_var('AISLE_SOURCE', 'demo')) }}{%- endmacro %}

{% macro uses_canonical_files() -%}{{ return(aisle_source() in ['demo', 'files']) }}{%- endmacro %}

{#- The active adapter's staging model of a relation (events, items, users, searches): stg_shop__<relation>
    for the demo shop and canonical files, stg_uci_retail__<relation> for Online Retail. -#}
{% macro adapter_model(relation) -%}
    {{ return('stg_' ~ ('shop' if uses_canonical_files() else 'uci_retail') ~ '__' ~ relation) }}
{%- endmacro %}

{#- The active adapter's raw relations, for the reconciliation: one dict per relation with its name, the
    raw source relation and the adapter's label (source_name). A table of the canonical contract whose file
    is not there is left out: items, users and searches are optional, and a search-only build
    (`dbt build --select +tag:search`, a catalogue and a search log) has no events file; the full build
    still requires one (the raw contract, scoring/ingest/raw_contract.py, checks it before dbt runs). -#}
{% macro raw_relations() -%}
    {%- set found = [] -%}
    {%- if uses_canonical_files() -%}
        {%- for table in ['events', 'items', 'users', 'searches'] if raw_table_exists(table) -%}
            {%- do found.append({'source_name': aisle_source(), 'relation': table, 'raw': source('shop', table)}) -%}
        {%- endfor -%}
    {%- else -%}
        {%- do found.append({'source_name': aisle_source(), 'relation': 'events', 'raw': source('uci_retail', 'invoice_lines')}) -%}
    {%- endif -%}
    {{ return(found) }}
{%- endmacro %}

{#- Optional cut-off (AISLE_AS_OF): events at or after it are held back from every model. -#}
{% macro as_of_timestamp() -%}
    {%- set as_of = env_var('AISLE_AS_OF', '') -%}
    {%- if as_of -%}cast('{{ as_of }}' as timestamp){%- else -%}null{%- endif -%}
{%- endmacro %}

{#- The cut of a derived catalogue (AISLE_CATALOGUE_AS_OF, else AISLE_AS_OF): a source without a catalogue
    file lists the items its clean events name before it. Later than the as-of cut, it lists items that
    have not sold by the as-of cut yet (a shop lists a product before it sells): `aisle evaluate` shows
    every method the items first sold in its test window this way, with their titles and no sales. -#}
{% macro catalogue_as_of_timestamp() -%}
    {%- set catalogue_as_of = env_var('AISLE_CATALOGUE_AS_OF', '') -%}
    {%- if catalogue_as_of -%}cast('{{ catalogue_as_of }}' as timestamp){%- else -%}{{ as_of_timestamp() }}{%- endif -%}
{%- endmacro %}
