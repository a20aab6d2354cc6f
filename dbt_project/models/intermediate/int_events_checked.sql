-- Every staged event of the active adapter with the rules it broke (null when clean): the one place
-- where every event is labelled with the common rules (macros/event_rules.sql), whichever source the
-- rows came from.

with events as (

    select * from {{ ref('stg_events') }}

),

-- The catalogue the source supplied: its clean rows. Items derived from the events are no catalogue.
catalogue as (

    select distinct item_id from {{ ref('stg_items') }} where not is_derived and rule_codes is null

),

-- Without a supplied catalogue (a source that has none, or no item rows at all) no event is an orphan,
-- and staging derives the items from the events instead.
catalogue_supplied as (

    select count(*) > 0 as has_catalogue from {{ ref('stg_items') }} where not is_derived

),

-- The typical price of an item, from lines that pass every other rule, to spot price outliers.
item_prices as (

    {{ item_median_prices('events') }}

),

checked as (

    select
        events.*,
        concat_ws(',', adapter_rule_codes, {{ rule_codes(common_event_rules(
            orphan_condition='catalogue_supplied.has_catalogue and events.item_id is not null and catalogue.item_id is null'
        )) }}) as rule_codes_all
    from events
    left join item_prices on events.item_id = item_prices.item_id
    left join catalogue on events.item_id = catalogue.item_id
    cross join catalogue_supplied

)

select
    source_name,
    row_key,
    source_file,
    source_row_number,
    user_id,
    item_id,
    event_type,
    event_at,
    quantity,
    unit_price,
    order_id,
    country,
    item_text,
    nullif(rule_codes_all, '') as rule_codes,
    nullif(rule_codes_all, '') is null as is_clean,
    raw_values
from checked
