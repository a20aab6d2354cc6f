-- Clean purchase lines netted for returns. A return (or Online Retail cancellation) is matched to the
-- latest earlier purchase of the same user and item; a return with no such purchase (bought before
-- the data starts) nets nothing and is counted in int_returns_matched.

with clean as (

    select * from {{ ref('int_events_clean') }}

),

purchases as (

    select
        row_key as purchase_key,
        order_id,
        user_id,
        item_id,
        event_at as ordered_at,
        quantity,
        unit_price,
        country
    from clean
    where event_type = 'purchase'

),

returns_matched as (

    select * from {{ ref('int_returns_matched') }}

),

returned as (

    select purchase_key, sum(quantity) as returned_quantity
    from returns_matched
    where purchase_key is not null
    group by purchase_key

)

select
    purchases.purchase_key,
    purchases.order_id,
    purchases.user_id,
    purchases.item_id,
    purchases.ordered_at,
    purchases.quantity,
    least(coalesce(returned.returned_quantity, 0), purchases.quantity) as returned_quantity,
    purchases.quantity - least(coalesce(returned.returned_quantity, 0), purchases.quantity) as net_quantity,
    purchases.unit_price,
    cast(
        (purchases.quantity - least(coalesce(returned.returned_quantity, 0), purchases.quantity))
        * purchases.unit_price as decimal(14, 2)
    ) as net_revenue,
    purchases.country
from purchases
left join returned on purchases.purchase_key = returned.purchase_key
