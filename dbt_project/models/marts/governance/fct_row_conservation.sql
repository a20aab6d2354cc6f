-- Raw rows = clean rows + quarantined rows, per relation. Raw counts are read straight from the
-- source files, so a row lost anywhere in staging shows up here (and fails assert_rows_conserved).
-- The items and users files are optional: a relation whose file is not there has no row here.

{%- set relations = [] %}
{%- if uses_canonical_files() %}
{%- for relation in ['events', 'items', 'users'] if relation == 'events' or raw_table_exists(relation) %}
{%- do relations.append(relation) %}
{%- endfor %}
{%- endif %}

with counts as (

    {% if uses_canonical_files() %}
    {% for relation in relations %}
    {%- set raw = source('shop', relation) %}
    select
        '{{ relation }}' as relation,
        (select count(*) from {{ raw }}) as raw_rows,
        {% if relation == 'events' -%}
        (select count(*) from {{ ref('int_events_clean') }}) as clean_rows
        {%- elif relation == 'items' -%}
        (select count(*) from {{ ref('stg_shop__items') }} where rule_codes is null) as clean_rows
        {%- else -%}
        (select count(*) from {{ ref('stg_shop__users') }} where rule_codes is null) as clean_rows
        {%- endif %}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}
    {% else %}
    select
        'events' as relation,
        (select count(*) from {{ source('uci_retail', 'invoice_lines') }}) as raw_rows,
        (select count(*) from {{ ref('int_events_clean') }}) as clean_rows
    {% endif %}

),

-- Rows typed as returns (Online Retail's 'C' invoices), clean or not: a figure to reconcile with the source.
returns as (

    select 'events' as relation, count(*) as return_rows
    from {{ ref('int_events_checked') }}
    where event_type = 'return'

),

quarantined as (

    select
        relation,
        count(*) as quarantined_rows,
        sum(case when rule_codes like '%duplicate_row%' then 1 else 0 end) as duplicate_rows,
        sum(case when rule_codes = 'after_as_of' then 1 else 0 end) as held_rows
    from {{ ref('fct_quarantine') }}
    group by relation

)

select
    '{{ aisle_source() }}' as source_name,
    counts.relation,
    cast(counts.raw_rows as bigint) as raw_rows,
    cast(counts.clean_rows as bigint) as clean_rows,
    cast(coalesce(quarantined.quarantined_rows, 0) as bigint) as quarantined_rows,
    cast(coalesce(quarantined.duplicate_rows, 0) as bigint) as duplicate_rows,
    cast(coalesce(quarantined.held_rows, 0) as bigint) as held_rows,
    cast(coalesce(returns.return_rows, 0) as bigint) as return_rows,
    counts.raw_rows = counts.clean_rows + coalesce(quarantined.quarantined_rows, 0) as is_balanced
from counts
left join quarantined on counts.relation = quarantined.relation
left join returns on counts.relation = returns.relation
