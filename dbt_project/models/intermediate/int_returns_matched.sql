-- Each clean return matched to the purchase it undoes: the latest purchase of the same user and item
-- at or before the return (portable SQL: a ranked join, no ASOF join).

with clean as (

    select * from {{ ref('int_events_clean') }}

),

returns as (

    select row_key as return_key, user_id, item_id, event_at as returned_at, quantity
    from clean
    where event_type = 'return'

),

purchases as (

    select row_key as purchase_key, user_id, item_id, event_at as ordered_at
    from clean
    where event_type = 'purchase'

),

candidates as (

    select
        returns.return_key,
        purchases.purchase_key,
        row_number() over (
            partition by returns.return_key order by purchases.ordered_at desc, purchases.purchase_key
        ) as recency_rank
    from returns
    inner join purchases
        on returns.user_id = purchases.user_id
        and returns.item_id = purchases.item_id
        and purchases.ordered_at <= returns.returned_at

)

select
    returns.return_key,
    returns.user_id,
    returns.item_id,
    returns.returned_at,
    returns.quantity,
    candidates.purchase_key,
    candidates.purchase_key is not null as is_matched
from returns
left join candidates
    on returns.return_key = candidates.return_key
    and candidates.recency_rank = 1
