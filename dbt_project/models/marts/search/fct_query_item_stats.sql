{{ config(materialized='external') }}

-- Query x item engagement for Feast's query_item_stats view: for every (query, item) pair a search of the
-- query led to, one snapshot per week the query was searched from the pair's first interaction on
-- (the query's snapshots in fct_query_stats), cumulative, counting only searches strictly before it. A
-- snapshot follows every search of the query, not only the item's, because click_share (the item's share
-- of the query's clicks) falls when other items are clicked.

with searches as (

    select * from {{ ref('fct_searches') }}

),

query_stats as (

    select query, cast(event_timestamp as date) as snapshot_on, clicks from {{ ref('fct_query_stats') }}

),

last_day as (

    select cast({{ plus_days('max(searched_at)', 1) }} as date) as snapshot_on from searches

),

weekly as (

    select
        searches.query,
        searches.item_id,
        {{ search_snapshot_on('searches.searched_at', 'last_day.snapshot_on') }} as snapshot_on,
        sum(case when searches.action = 'click' then 1 else 0 end) as clicks,
        sum(case when searches.action = 'cart' then 1 else 0 end) as carts,
        sum(case when searches.action = 'purchase' then 1 else 0 end) as purchases
    from searches
    cross join last_day
    where searches.item_id is not null
    group by 1, 2, 3

),

pairs as (

    select query, item_id, min(snapshot_on) as first_on from weekly group by query, item_id

),

-- Each pair at each of its query's snapshots from its first interaction on.
grid as (

    select pairs.query, pairs.item_id, query_stats.snapshot_on, query_stats.clicks as query_clicks
    from pairs
    inner join query_stats
        on pairs.query = query_stats.query
        and query_stats.snapshot_on >= pairs.first_on

),

running as (

    select
        grid.query,
        grid.item_id,
        grid.snapshot_on,
        grid.query_clicks,
        sum(coalesce(weekly.clicks, 0)) over history as clicks,
        sum(coalesce(weekly.carts, 0)) over history as carts,
        sum(coalesce(weekly.purchases, 0)) over history as purchases
    from grid
    left join weekly
        on grid.query = weekly.query
        and grid.item_id = weekly.item_id
        and grid.snapshot_on = weekly.snapshot_on
    window history as (
        partition by grid.query, grid.item_id order by grid.snapshot_on
        rows between unbounded preceding and current row
    )

)

select
    query,
    item_id,
    cast(snapshot_on as timestamp) as event_timestamp,
    cast(clicks as bigint) as clicks,
    cast(carts as bigint) as carts,
    cast(purchases as bigint) as purchases,
    cast(clicks as double) / nullif(query_clicks, 0) as click_share
from running
