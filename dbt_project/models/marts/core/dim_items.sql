{{ config(materialized='external') }}

-- One row per item with its canonical title and attributes; Feast's item_text view reads this file.
-- event_timestamp is when the item first became available, so point-in-time joins never see an
-- item before it existed.

select
    item_id,
    title,
    description,
    coalesce(category, product_type) as category,
    brand,
    colour,
    material,
    product_type,
    cast(list_price as double) as list_price,
    cast(median_unit_price as double) as median_unit_price,
    purchase_lines,
    available_at as event_timestamp
from {{ ref('int_items') }}
