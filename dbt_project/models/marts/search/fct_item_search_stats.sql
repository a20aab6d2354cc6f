{{ config(materialized='external') }}

-- How search brings shoppers to each item, for Feast's item_search_stats view: one snapshot per item and
-- week it was clicked, carted or bought from a search (search_snapshot_on), cumulative, counting only
-- searches strictly before the snapshot.

with searches as (

    select * from {{ ref('fct_searches') }}

),

last_day as (

    select cast({{ plus_days('max(searched_at)', 1) }} as date) as snapshot_on from searches

),

interactions as (

    select
        searches.item_id,
        searches.query,
        searches.action,
        {{ search_snapshot_on('searches.searched_at', 'last_day.snapshot_on') }} as snapshot_on
    from searches
    cross join last_day
    where searches.item_id is not null

),

weekly as (

    select
        item_id,
        snapshot_on,
        sum(case when action = 'click' then 1 else 0 end) as clicks,
        sum(case when action = 'cart' then 1 else 0 end) as carts,
        sum(case when action = 'purchase' then 1 else 0 end) as purchases
    from interactions
    group by item_id, snapshot_on

),

-- The snapshot in which each query first led to the item, so distinct queries can be a running sum.
first_queries as (

    select item_id, first_on as snapshot_on, count(*) as new_queries
    from (select item_id, query, min(snapshot_on) as first_on from interactions group by item_id, query) as q
    group by item_id, first_on

),

running as (

    select
        weekly.item_id,
        weekly.snapshot_on,
        sum(weekly.clicks) over history as clicks,
        sum(weekly.carts) over history as carts,
        sum(weekly.purchases) over history as purchases,
        sum(coalesce(first_queries.new_queries, 0)) over history as distinct_queries
    from weekly
    left join first_queries
        on weekly.item_id = first_queries.item_id
        and weekly.snapshot_on = first_queries.snapshot_on
    window history as (
        partition by weekly.item_id order by weekly.snapshot_on rows between unbounded preceding and current row
    )

)

select
    item_id,
    cast(snapshot_on as timestamp) as event_timestamp,
    cast(clicks as bigint) as search_clicks,
    cast(carts as bigint) as search_carts,
    cast(purchases as bigint) as search_purchases,
    cast(distinct_queries as bigint) as distinct_queries
from running
