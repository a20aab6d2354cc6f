-- The events that passed every rule: what every mart is built from.

select
    source_name,
    row_key,
    user_id,
    item_id,
    event_type,
    event_at,
    quantity,
    unit_price,
    order_id,
    country,
    item_text
from {{ ref('int_events_checked') }}
where is_clean
