{{ config(materialized='external') }}

-- Each user's session activity as of their last event: the distinct items they viewed, carted and bought
-- within var session_window_hours before it, newest first, each with the time of its latest such event.
-- It is the batch source of Feast's push source session_activity_push: a build loads these rows online,
-- and POST /events (scoring/serving/recommend_route.py) keeps each user's row current between builds by
-- merging one event at a time into it with the same window rule, so a pushed row equals what this model
-- would compute once the event reaches the raw data.

with events as (

    select user_id, item_id, event_type, event_at
    from {{ ref('int_events_clean') }}
    where user_id is not null
      and event_type in ('view', 'cart', 'purchase')

),

last_events as (

    select user_id, max(event_at) as last_event_at
    from events
    group by user_id

),

-- Each item's latest event of each kind inside the window that ends at the user's last event.
in_window as (

    select
        events.user_id,
        events.event_type,
        events.item_id,
        max(events.event_at) as latest_at
    from events
    inner join last_events
        on events.user_id = last_events.user_id
    where events.event_at >= last_events.last_event_at
        - interval '{{ var('session_window_hours') | int }} hours'
    group by events.user_id, events.event_type, events.item_id

),

ranked as (

    select
        *,
        {{ epoch_seconds('latest_at') }} as latest_at_unix,
        row_number() over (
            partition by user_id, event_type order by latest_at desc, item_id
        ) as recency_rank
    from in_window

),

lists as (

    select
        user_id,
        event_type,
        {{ ordered_list_agg('item_id', 'recency_rank') }} as item_ids,
        {{ ordered_list_agg('latest_at_unix', 'recency_rank') }} as event_times
    from ranked
    group by user_id, event_type

),

empty as (

    select {{ empty_list(text_type()) }} as item_ids, {{ empty_list('bigint') }} as event_times

)

select
    last_events.user_id,
    last_events.last_event_at as event_timestamp,
    coalesce(viewed.item_ids, empty.item_ids) as viewed_item_ids,
    coalesce(viewed.event_times, empty.event_times) as viewed_at,
    coalesce(carted.item_ids, empty.item_ids) as carted_item_ids,
    coalesce(carted.event_times, empty.event_times) as carted_at,
    coalesce(bought.item_ids, empty.item_ids) as bought_item_ids,
    coalesce(bought.event_times, empty.event_times) as bought_at,
    {{ epoch_seconds('last_events.last_event_at') }} as last_event_at
from last_events
cross join empty
left join lists as viewed
    on last_events.user_id = viewed.user_id and viewed.event_type = 'view'
left join lists as carted
    on last_events.user_id = carted.user_id and carted.event_type = 'cart'
left join lists as bought
    on last_events.user_id = bought.user_id and bought.event_type = 'purchase'
