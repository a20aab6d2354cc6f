{{ config(materialized='external') }}

-- Query volume and engagement for Feast's query_stats view, one snapshot per query and week it was
-- searched in (search_snapshot_on): the figures are cumulative and a snapshot at T counts only searches
-- strictly before T, so a point-in-time join cannot see the future. They change only when the query is
-- searched again, so the latest snapshot before any time holds the figures as of that time.

with searches as (

    select * from {{ ref('fct_searches') }}

),

last_day as (

    select cast({{ plus_days('max(searched_at)', 1) }} as date) as snapshot_on from searches

),

-- One row per search: how many clicks, carts and purchases it led to.
per_search as (

    select
        query,
        search_id,
        min(searched_at) as searched_at,
        sum(case when action = 'click' then 1 else 0 end) as clicks,
        sum(case when action = 'cart' then 1 else 0 end) as carts,
        sum(case when action = 'purchase' then 1 else 0 end) as purchases,
        max(case when action = 'click' then 1 else 0 end) as clicked,
        max(case when action in ('click', 'cart', 'purchase') then 1 else 0 end) as interacted
    from searches
    group by query, search_id

),

weekly as (

    select
        per_search.query,
        {{ search_snapshot_on('per_search.searched_at', 'last_day.snapshot_on') }} as snapshot_on,
        count(*) as searches,
        sum(per_search.clicked) as clicked_searches,
        sum(per_search.interacted) as interacted_searches,
        sum(per_search.clicks) as clicks,
        sum(per_search.carts) as carts,
        sum(per_search.purchases) as purchases
    from per_search
    cross join last_day
    group by 1, 2

),

running as (

    select
        query,
        snapshot_on,
        sum(searches) over history as searches,
        sum(clicked_searches) over history as clicked_searches,
        sum(interacted_searches) over history as interacted_searches,
        sum(clicks) over history as clicks,
        sum(carts) over history as carts,
        sum(purchases) over history as purchases
    from weekly
    window history as (partition by query order by snapshot_on rows between unbounded preceding and current row)

)

select
    query,
    cast(snapshot_on as timestamp) as event_timestamp,
    cast(searches as bigint) as searches,
    cast(clicks as bigint) as clicks,
    cast(carts as bigint) as carts,
    cast(purchases as bigint) as purchases,
    cast(clicked_searches as double) / searches as click_through_rate,
    1.0 - cast(interacted_searches as double) / searches as zero_click_rate
from running
