-- One canonical row per item: the clean catalogue row staging hands over (the source's own catalogue, or
-- where it has none the items staging derived from the clean events), attributes parsed from its title,
-- and price statistics from clean sales.

with clean_events as (

    select * from {{ ref('int_events_clean') }}

),

clean_lines as (

    select * from clean_events
    where event_type = 'purchase'

),

sales as (

    select
        item_id,
        min(event_at) as first_sold_at,
        count(*) as purchase_lines,
        cast({{ median('unit_price') }} as decimal(12, 2)) as median_unit_price,
        min(unit_price) as min_unit_price,
        max(unit_price) as max_unit_price
    from clean_lines
    group by item_id

),

-- Clean catalogue rows; a derived item whose events carry no text is titled by its id (title_is_id).
catalogue as (

    select item_id, title, description, category, brand, list_price, title_is_id
    from {{ ref('stg_items') }}
    where rule_codes is null

),

first_seen as (

    select min(event_at) as first_event_at from clean_events

)

select
    catalogue.item_id,
    catalogue.title,
    catalogue.description,
    catalogue.category,
    catalogue.brand,
    case when not catalogue.title_is_id then {{ title_colour('catalogue.title') }} end as colour,
    case when not catalogue.title_is_id then {{ title_material('catalogue.title') }} end as material,
    case when not catalogue.title_is_id then {{ title_product_type('catalogue.title') }} end as product_type,
    coalesce(catalogue.list_price, sales.median_unit_price) as list_price,
    sales.median_unit_price,
    sales.min_unit_price,
    sales.max_unit_price,
    coalesce(sales.purchase_lines, 0) as purchase_lines,
    sales.first_sold_at,
    coalesce(sales.first_sold_at, first_seen.first_event_at) as available_at
from catalogue
cross join first_seen
left join sales on catalogue.item_id = sales.item_id
