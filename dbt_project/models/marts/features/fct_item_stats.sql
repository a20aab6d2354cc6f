{{ config(materialized='external') }}

-- Weekly item popularity snapshots for Feast's item_stats view. A snapshot at time T counts only
-- purchases and returns strictly before T, so a point-in-time join cannot see the future.

with lines as (

    select * from {{ ref('fct_order_lines') }}

),

daily as (

    select
        item_id,
        cast(ordered_at as date) as sold_on,
        sum(quantity) as units,
        count(distinct order_id) as orders,
        sum(quantity * unit_price) as revenue
    from lines
    group by item_id, cast(ordered_at as date)

),

daily_returns as (

    select item_id, cast(returned_at as date) as returned_on, sum(quantity) as returned_units
    from {{ ref('int_returns_matched') }}
    where is_matched
    group by item_id, cast(returned_at as date)

),

-- When each known buyer first bought the item, and when they bought it a second time (if ever).
buyer_purchases as (

    select
        item_id,
        user_id,
        cast(ordered_at as date) as bought_on,
        row_number() over (partition by item_id, user_id order by ordered_at, purchase_key) as purchase_number
    from lines
    where user_id is not null

),

first_buyers as (

    select item_id, user_id, bought_on as first_bought_on from buyer_purchases where purchase_number = 1

),

repeat_buyers as (

    select item_id, user_id, bought_on as second_bought_on from buyer_purchases where purchase_number = 2

),

-- Weekly snapshots, plus one the day after the last sale, so the latest figures exist and no
-- snapshot is stamped later than the data it summarises.
last_day as (

    select cast({{ plus_days('max(sold_on)', 1) }} as date) as snapshot_on from daily

),

snapshots as (

    select distinct cast({{ plus_days(week_start('sold_on'), 7) }} as date) as snapshot_on
    from daily
    where cast({{ plus_days(week_start('sold_on'), 7) }} as date) < (select snapshot_on from last_day)
    union
    select snapshot_on from last_day

),

item_snapshots as (

    select items.item_id, snapshots.snapshot_on
    from (select item_id, min(sold_on) as first_sold_on from daily group by item_id) as items
    inner join snapshots on items.first_sold_on < snapshots.snapshot_on

),

windowed as (

    select
        item_snapshots.item_id,
        item_snapshots.snapshot_on,
        sum(case when daily.sold_on >= {{ minus_days('item_snapshots.snapshot_on', 7) }} then daily.units else 0 end) as units_7d,
        sum(case when daily.sold_on >= {{ minus_days('item_snapshots.snapshot_on', 30) }} then daily.units else 0 end) as units_30d,
        sum(case when daily.sold_on >= {{ minus_days('item_snapshots.snapshot_on', 90) }} then daily.units else 0 end) as units_90d,
        sum(case when daily.sold_on >= {{ minus_days('item_snapshots.snapshot_on', 30) }} then daily.orders else 0 end) as orders_30d
    from item_snapshots
    left join daily
        on item_snapshots.item_id = daily.item_id
        and daily.sold_on < item_snapshots.snapshot_on
        and daily.sold_on >= {{ minus_days('item_snapshots.snapshot_on', 90) }}
    group by item_snapshots.item_id, item_snapshots.snapshot_on

),

-- All-time figures as of each snapshot: one running sum over events and snapshots in time order.
timeline as (

    select
        item_id, sold_on as at_day, 0 as is_snapshot, units, revenue,
        0 as returned_units, 0 as new_buyers, 0 as new_repeat_buyers
    from daily
    union all
    select item_id, returned_on, 0, 0, 0, returned_units, 0, 0 from daily_returns
    union all
    select item_id, first_bought_on, 0, 0, 0, 0, 1, 0 from first_buyers
    union all
    select item_id, second_bought_on, 0, 0, 0, 0, 0, 1 from repeat_buyers
    union all
    select item_id, snapshot_on, 1, 0, 0, 0, 0, 0 from item_snapshots

),

running as (

    select
        item_id,
        at_day,
        is_snapshot,
        sum(units) over history as units_total,
        sum(revenue) over history as revenue_total,
        sum(returned_units) over history as returned_total,
        sum(new_buyers) over history as distinct_buyers,
        sum(new_repeat_buyers) over history as repeat_buyers
    from timeline
    window history as (
        partition by item_id order by at_day, is_snapshot desc rows between unbounded preceding and current row
    )

)

select
    windowed.item_id,
    cast(windowed.snapshot_on as timestamp) as event_timestamp,
    cast(windowed.units_7d as bigint) as units_7d,
    cast(windowed.units_30d as bigint) as units_30d,
    cast(windowed.units_90d as bigint) as units_90d,
    cast(windowed.orders_30d as bigint) as orders_30d,
    cast(running.distinct_buyers as bigint) as distinct_buyers,
    cast(running.repeat_buyers as double) / nullif(running.distinct_buyers, 0) as repeat_buyer_share,
    cast(running.revenue_total / nullif(running.units_total, 0) as double) as avg_unit_price,
    least(1.0, cast(running.returned_total as double) / nullif(running.units_total, 0)) as return_rate
from windowed
inner join running
    on windowed.item_id = running.item_id
    and windowed.snapshot_on = running.at_day
    and running.is_snapshot = 1
