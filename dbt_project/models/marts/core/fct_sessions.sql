-- One row per browsing session (30 minutes of inactivity ends one): the funnel from views to carts to
-- purchases, for session features and conversion reporting.

select
    session_id,
    user_id,
    session_number,
    started_at,
    ended_at,
    duration_seconds,
    events,
    views,
    carts,
    purchases,
    distinct_items,
    units_purchased,
    is_converted
from {{ ref('int_sessions') }}
