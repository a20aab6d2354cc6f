-- Raw rows = clean rows + quarantined rows, per relation. The deliberate exception to "only staging reads
-- sources": raw counts are read straight from the active adapter's raw files (raw_relations), so a row
-- lost anywhere in staging shows up here (and fails assert_rows_conserved). A table whose file is not
-- there (items, users, searches; events in a search-only build) has no row here.

with raw_counts as (

    {%- for raw in raw_relations() %}
    select '{{ raw.source_name }}' as source_name, '{{ raw.relation }}' as relation, count(*) as raw_rows
    from {{ raw.raw }}
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}

),

-- Rows that passed every rule; items and users derived from the events have no raw row, so they do not count.
clean_counts as (

    select 'events' as relation, count(*) as clean_rows from {{ ref('int_events_clean') }}
    union all
    select 'items', count(*) from {{ ref('stg_items') }} where rule_codes is null and not is_derived
    union all
    select 'users', count(*) from {{ ref('stg_users') }} where rule_codes is null and not is_derived
    union all
    -- The clean search rows as the mart holds them, so a row lost between the rules and the mart shows too.
    select 'searches', count(*) from {{ ref('fct_searches') }}

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
    raw_counts.source_name,
    raw_counts.relation,
    cast(raw_counts.raw_rows as bigint) as raw_rows,
    cast(clean_counts.clean_rows as bigint) as clean_rows,
    cast(coalesce(quarantined.quarantined_rows, 0) as bigint) as quarantined_rows,
    cast(coalesce(quarantined.duplicate_rows, 0) as bigint) as duplicate_rows,
    cast(coalesce(quarantined.held_rows, 0) as bigint) as held_rows,
    cast(coalesce(returns.return_rows, 0) as bigint) as return_rows,
    raw_counts.raw_rows = clean_counts.clean_rows + coalesce(quarantined.quarantined_rows, 0) as is_balanced
from raw_counts
inner join clean_counts on raw_counts.relation = clean_counts.relation
left join quarantined on raw_counts.relation = quarantined.relation
left join returns on raw_counts.relation = returns.relation
