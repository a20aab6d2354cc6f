-- One canonical row per item: the clean title (catalogue title, or the most frequent clean
-- description in the events where there is no catalogue), attributes parsed from it, and price stats.

with clean_lines as (

    select * from {{ ref('int_events_clean') }}
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

{% if uses_canonical_files() %}
catalogue as (

    select item_id, title, description, category, brand, list_price
    from {{ ref('stg_shop__items') }}
    where rule_codes is null

),
{% else %}
-- Count the raw texts first and normalise only the distinct ones (thousands, not every sale line).
raw_text_counts as (

    select item_id, item_text, count(*) as n
    from clean_lines
    where item_text is not null
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

catalogue as (

    select
        item_id,
        title,
        cast(null as varchar) as description,
        {{ title_product_type('title') }} as category,
        cast(null as varchar) as brand,
        cast(null as decimal(12, 2)) as list_price
    from ranked_text
    where text_rank = 1

),
{% endif %}

first_seen as (

    select min(event_at) as first_event_at from {{ ref('int_events_clean') }}

)

select
    catalogue.item_id,
    catalogue.title,
    catalogue.description,
    catalogue.category,
    catalogue.brand,
    {{ title_colour('catalogue.title') }} as colour,
    {{ title_material('catalogue.title') }} as material,
    {{ title_product_type('catalogue.title') }} as product_type,
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
