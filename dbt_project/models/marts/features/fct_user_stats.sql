{{ config(materialized='external') }}

-- User RFM snapshots for Feast's user_stats view: one row per user and day with a purchase, holding
-- the user's cumulative figures as of the last order that day (never anything later).

with lines as (

    select
        *,
        row_number() over (partition by user_id, item_id order by ordered_at, purchase_key) as purchase_number
    from {{ ref('fct_order_lines') }}
    where user_id is not null

),

orders as (

    select
        user_id,
        order_id,
        min(ordered_at) as ordered_at,
        sum(quantity) as units,
        sum(quantity * unit_price) as revenue,
        sum(case when purchase_number = 1 then 1 else 0 end) as new_items,
        sum(case when purchase_number = 2 then 1 else 0 end) as newly_repeated_items,
        max(country) as country
    from lines
    group by user_id, order_id

),

cumulative as (

    select
        user_id,
        ordered_at,
        country,
        count(*) over history as orders_count,
        sum(revenue) over history as monetary_value,
        sum(units) over history as units_total,
        sum(new_items) over history as distinct_items,
        sum(newly_repeated_items) over history as repeated_items,
        min(ordered_at) over history as first_purchase_at,
        row_number() over (
            partition by user_id, cast(ordered_at as date) order by ordered_at desc, order_id desc
        ) as day_rank
    from orders
    window history as (partition by user_id order by ordered_at, order_id rows between unbounded preceding and current row)

)

select
    user_id,
    ordered_at as event_timestamp,
    cast(orders_count as bigint) as orders_count,
    cast(monetary_value as double) as monetary_value,
    cast(monetary_value / orders_count as double) as avg_order_value,
    cast(units_total as double) / orders_count as avg_basket_units,
    cast(distinct_items as bigint) as distinct_items,
    cast(repeated_items as double) / distinct_items as repeat_item_share,
    cast({{ days_between('first_purchase_at', 'ordered_at') }} as bigint) as tenure_days,
    {{ epoch_seconds('ordered_at') }} as last_purchase_at,
    country
from cumulative
where day_rank = 1
