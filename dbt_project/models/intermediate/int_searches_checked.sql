-- Every staged search row of the active adapter with the rules it broke (null when clean): the one place
-- where every search row is labelled with the common search rules (macros/search_rules.sql).

with searches as (

    select * from {{ ref('stg_searches') }}

),

-- The catalogue: the clean items staging hands on (the source's own catalogue, or items derived from the
-- clean events where it supplied none).
catalogue as (

    select distinct item_id from {{ ref('stg_items') }} where rule_codes is null

),

-- With no items at all there is nothing to check an item against, so no search row is unknown_item.
catalogue_supplied as (

    select count(*) > 0 as has_catalogue from catalogue

),

-- Distinct searches per known user and calendar day, from every row whose time parses (whatever else
-- it broke): a user above var bot_searches_per_day is a bot, and every row of that user and day goes.
user_days as (

    select user_id, cast(searched_at as date) as searched_on, count(distinct search_id) as searches
    from searches
    where user_id is not null and searched_at is not null
    group by user_id, cast(searched_at as date)

),

checked as (

    select
        searches.*,
        concat_ws(',', searches.adapter_rule_codes, {{ rule_codes(common_search_rules()) }}) as rule_codes_all
    from searches
    left join user_days
        on searches.user_id = user_days.user_id
        and cast(searches.searched_at as date) = user_days.searched_on
    left join catalogue on searches.item_id = catalogue.item_id
    cross join catalogue_supplied

)

select
    source_name,
    row_key,
    source_file,
    source_row_number,
    search_id,
    user_id,
    query,
    query_chars,
    searched_at,
    item_id,
    action,
    position,
    query_markup_stripped,
    query_redacted,
    nullif(rule_codes_all, '') as rule_codes,
    nullif(rule_codes_all, '') is null as is_clean,
    raw_values
from checked
