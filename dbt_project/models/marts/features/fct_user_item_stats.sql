{{ config(materialized='external') }}

-- How a user has bought an item, for Feast's user_item_stats view: one row per user, item and day with
-- a purchase of it, cumulative as of that day. Quantities are gross, because a return only becomes
-- known later and must not leak back to the day of the purchase. purchase_key breaks ties (two lines of
-- the item in one order), so the day's row always counts every line up to it.

with lines as (

    select purchase_key, user_id, item_id, order_id, ordered_at, quantity
    from {{ ref('fct_order_lines') }}
    where user_id is not null

),

cumulative as (

    select
        user_id,
        item_id,
        ordered_at,
        count(*) over history as times_bought,
        sum(quantity) over history as total_quantity,
        min(ordered_at) over history as first_bought_at,
        row_number() over (
            partition by user_id, item_id, cast(ordered_at as date)
            order by ordered_at desc, order_id desc, purchase_key desc
        ) as day_rank
    from lines
    window history as (
        partition by user_id, item_id order by ordered_at, order_id, purchase_key
        rows between unbounded preceding and current row
    )

)

select
    user_id,
    item_id,
    ordered_at as event_timestamp,
    cast(times_bought as bigint) as times_bought,
    cast(total_quantity as bigint) as total_quantity,
    {{ epoch_seconds('first_bought_at') }} as first_bought_at,
    {{ epoch_seconds('ordered_at') }} as last_bought_at
from cumulative
where day_rank = 1
