-- Browsing sessions: a user's clean views, carts and purchases, cut wherever the user was inactive for
-- longer than var session_timeout_minutes (30). Returns arrive days later and belong to no session;
-- guest events (no user) cannot be sessionised. One row per session.

with events as (

    select row_key, user_id, item_id, event_type, event_at, quantity
    from {{ ref('int_events_clean') }}
    where user_id is not null and event_type in ('view', 'cart', 'purchase')

),

gaps as (

    select
        *,
        {{ epoch_seconds('event_at') }} - {{ epoch_seconds(
            'lag(event_at) over (partition by user_id order by event_at, row_key)'
        ) }} as seconds_since_previous
    from events

),

numbered as (

    select
        *,
        sum(
            case
                when seconds_since_previous is null
                    or seconds_since_previous > {{ (var('session_timeout_minutes') | int) * 60 }} then 1
                else 0
            end
        ) over (
            partition by user_id order by event_at, row_key rows between unbounded preceding and current row
        ) as session_number
    from gaps

)

select
    user_id || '-' || cast(session_number as {{ text_type() }}) as session_id,
    user_id,
    cast(session_number as bigint) as session_number,
    min(event_at) as started_at,
    max(event_at) as ended_at,
    cast({{ epoch_seconds('max(event_at)') }} - {{ epoch_seconds('min(event_at)') }} as bigint) as duration_seconds,
    cast(count(*) as bigint) as events,
    cast(sum(case when event_type = 'view' then 1 else 0 end) as bigint) as views,
    cast(sum(case when event_type = 'cart' then 1 else 0 end) as bigint) as carts,
    cast(sum(case when event_type = 'purchase' then 1 else 0 end) as bigint) as purchases,
    cast(count(distinct item_id) as bigint) as distinct_items,
    cast(coalesce(sum(case when event_type = 'purchase' then quantity end), 0) as bigint) as units_purchased,
    sum(case when event_type = 'purchase' then 1 else 0 end) > 0 as is_converted
from numbered
group by user_id, session_number
