{{ config(materialized='external') }}

-- Each user's most recent distinct purchases, as of every day they bought something: the text tower
-- of the recommender reads these ids (newest first) to build the user's query.

with user_items as (

    select user_id, item_id, event_timestamp, last_bought_at
    from {{ ref('fct_user_item_stats') }}

),

snapshots as (

    select distinct user_id, event_timestamp
    from user_items

),

-- For every snapshot, each item the user had bought by then, with its latest purchase up to then.
known as (

    select
        snapshots.user_id,
        snapshots.event_timestamp,
        user_items.item_id,
        max(user_items.event_timestamp) as last_bought_at
    from snapshots
    inner join user_items
        on snapshots.user_id = user_items.user_id
        and user_items.event_timestamp <= snapshots.event_timestamp
    group by snapshots.user_id, snapshots.event_timestamp, user_items.item_id

),

ranked as (

    select
        *,
        row_number() over (
            partition by user_id, event_timestamp order by last_bought_at desc, item_id
        ) as recency_rank
    from known

)

select
    user_id,
    event_timestamp,
    {{ ordered_list_agg('item_id', 'recency_rank') }} as recent_item_ids,
    cast(count(*) as bigint) as history_length
from ranked
where recency_rank <= {{ var('history_length') | int }}
group by user_id, event_timestamp
