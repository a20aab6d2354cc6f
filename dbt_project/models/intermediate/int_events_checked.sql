-- Every raw event of the active adapter with the rules it broke (null when clean): the one place
-- where the common event rules are applied, whichever source the rows came from.

with events as (

    {% if uses_canonical_files() -%}
    select * from {{ ref('stg_shop__events') }}
    {%- else -%}
    select * from {{ ref('stg_uci_retail__events') }}
    {%- endif %}

),

{% if uses_canonical_files() -%}
catalogue as (

    select distinct item_id from {{ ref('stg_shop__items') }} where rule_codes is null

),

-- The items file is optional: without a catalogue (no item rows at all) no event is an orphan, and
-- int_items derives the items from the events instead.
catalogue_supplied as (

    select count(*) > 0 as has_catalogue from {{ ref('stg_shop__items') }}

),
{%- endif %}

-- The typical price of an item, from lines that pass every other rule, to spot price outliers.
item_prices as (

    select item_id, {{ median('unit_price') }} as median_unit_price
    from events
    where adapter_rule_codes is null and occurrence = 1 and event_type = 'purchase' and unit_price > 0
    group by item_id

),

checked as (

    select
        events.*,
        concat_ws(',', adapter_rule_codes, {{ rule_codes([
            ('duplicate_row', 'events.occurrence > 1'),
            ('missing_item_id', 'events.item_id is null'),
            ('malformed_timestamp', 'events.event_at is null'),
            ('non_positive_price', "events.event_type in ('purchase', 'return') and events.unit_price <= 0"),
            ('quantity_outlier', 'abs(events.quantity) > ' ~ var('max_line_quantity')),
            ('price_outlier', 'events.unit_price > ' ~ var('max_price_ratio') ~ ' * item_prices.median_unit_price'),
            ('future_timestamp', 'events.event_at > current_timestamp'),
            ('orphan_item_id', 'catalogue_supplied.has_catalogue and events.item_id is not null and catalogue.item_id is null') if uses_canonical_files() else ('orphan_item_id', 'false'),
            ('after_as_of', 'events.event_at >= ' ~ as_of_timestamp()),
        ]) }}) as rule_codes_all
    from events
    left join item_prices on events.item_id = item_prices.item_id
    {% if uses_canonical_files() -%}
    left join catalogue on events.item_id = catalogue.item_id
    cross join catalogue_supplied
    {%- endif %}

)

select
    source_name,
    row_key,
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
