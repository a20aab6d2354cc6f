-- One row per known user, keyed by an id that carries no PII (no e-mail, phone or name reaches here).

with purchases as (

    select
        user_id,
        min(ordered_at) as first_purchase_at,
        max(ordered_at) as last_purchase_at,
        count(distinct order_id) as orders
    from {{ ref('fct_order_lines') }}
    where user_id is not null
    group by user_id

),

countries as (

    select user_id, country
    from (
        select
            user_id,
            country,
            row_number() over (partition by user_id order by count(*) desc, country) as country_rank
        from {{ ref('fct_order_lines') }}
        where user_id is not null
        group by user_id, country
    ) as ranked
    where country_rank = 1

),

-- Registered users as staging hands them over: the source's own users (clean rows), or where it has
-- none the users staging derived from the clean events (Online Retail: each customer's first purchase).
registered as (

    select user_id, country, signed_up_at
    from {{ ref('stg_users') }}
    where rule_codes is null

),

-- Shoppers with clean events whom the users file does not list yet: someone who signed up and browsed
-- (through POST /events, say) after the last users export. Without them their sessions would have no user.
browsers as (

    select distinct user_id
    from {{ ref('int_events_clean') }}
    where user_id is not null

),

all_users as (

    select user_id from registered
    union
    select user_id from purchases
    union
    select user_id from browsers

)

select
    all_users.user_id,
    coalesce(countries.country, registered.country) as country,
    registered.signed_up_at,
    purchases.first_purchase_at,
    purchases.last_purchase_at,
    coalesce(purchases.orders, 0) as orders
from all_users
left join registered on all_users.user_id = registered.user_id
left join purchases on all_users.user_id = purchases.user_id
left join countries on all_users.user_id = countries.user_id
