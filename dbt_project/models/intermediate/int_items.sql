-- One canonical row per item: the clean title (the catalogue's, or where there is no catalogue the
-- most frequent normalised text the events carry: Online Retail's Description, the shop events' title,
-- else the item id), attributes parsed from it, and price stats.

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
        {{ median('unit_price') }} as median_unit_price,
        min(unit_price) as min_unit_price,
        max(unit_price) as max_unit_price
    from clean_lines
    group by item_id

),

-- Items seen in the events, for a source without a catalogue. Returns do not name an item (Online
-- Retail's cancellations repeat the text of any era), so only views, carts and purchases count.
event_items as (

    select distinct item_id from clean_events where event_type <> 'return'

),

-- Count the raw texts first and normalise only the distinct ones (thousands, not every sale line).
raw_text_counts as (

    select item_id, item_text, count(*) as n
    from clean_events
    where event_type <> 'return' and item_text is not null
    group by item_id, item_text

),

text_counts as (

    select item_id, {{ normalise_title('item_text') }} as title, sum(n) as n
    from raw_text_counts
    group by 1, 2

),

ranked_text as (

    select
        item_id,
        title,
        row_number() over (partition by item_id order by n desc, title) as text_rank
    from text_counts
    where title is not null

),

-- The item dimension derived from the events; an item whose events carry no text is titled by its id.
derived as (

    select
        event_items.item_id,
        coalesce(ranked_text.title, event_items.item_id) as title,
        cast(null as varchar) as description,
        {{ title_product_type('ranked_text.title') }} as category,
        cast(null as varchar) as brand,
        cast(null as decimal(12, 2)) as list_price,
        ranked_text.title is null as title_is_id
    from event_items
    left join ranked_text
        on event_items.item_id = ranked_text.item_id
        and ranked_text.text_rank = 1

),

{% if uses_canonical_files() %}
-- The items file is optional: its clean rows are the catalogue; with no item rows at all the items
-- come from the events.
catalogue as (

    select item_id, title, description, category, brand, list_price, false as title_is_id
    from {{ ref('stg_shop__items') }}
    where rule_codes is null
    union all
    select * from derived
    where not exists (select 1 from {{ ref('stg_shop__items') }})

),
{% else %}
catalogue as (

    select * from derived

),
{% endif %}

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
