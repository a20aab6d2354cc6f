{{ config(enabled=uses_canonical_files()) }}

{%- set columns = ['user_id', 'item_id', 'event_type', 'event_at', 'quantity', 'unit_price', 'order_id', 'country'] %}

with numbered as (

    {{ raw_rows(source('shop', 'events'), columns) }}

),

typed as (

    select
        'shop' as source_name,
        {{ row_key('shop.events', columns) }} as row_key,
        source_row_number,
        occurrence,
        nullif(trim(user_id_raw), '') as user_id,
        nullif(trim(item_id_raw), '') as item_id,
        lower(trim(event_type_raw)) as event_type,
        {{ try_parse_timestamp('trim(event_at_raw)') }} as event_at,
        {{ try_cast('trim(quantity_raw)', 'integer') }} as quantity,
        {{ try_cast('trim(unit_price_raw)', 'decimal(12, 2)') }} as unit_price,
        nullif(trim(order_id_raw), '') as order_id,
        nullif(trim(country_raw), '') as country,
        cast(null as varchar) as item_text,
        {{ rule_codes([
            ('missing_user_id', "nullif(trim(user_id_raw), '') is null"),
            ('malformed_event_type', "lower(trim(event_type_raw)) not in ('view', 'cart', 'purchase', 'return')"),
            ('malformed_quantity', "nullif(trim(quantity_raw), '') is not null and " ~ try_cast('trim(quantity_raw)', 'integer') ~ " is null"),
            ('malformed_price', "nullif(trim(unit_price_raw), '') is not null and " ~ try_cast('trim(unit_price_raw)', 'decimal(12, 2)') ~ " is null"),
            ('non_positive_quantity', "lower(trim(event_type_raw)) in ('purchase', 'cart', 'return') and " ~ try_cast('trim(quantity_raw)', 'integer') ~ " <= 0"),
        ]) }} as adapter_rule_codes,
        {{ row_to_json(columns) }} as raw_values
    from numbered

)

select * from typed
