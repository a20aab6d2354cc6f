{{ config(enabled=uses_canonical_files()) }}

{%- set columns = ['item_id', 'title', 'description', 'category', 'brand', 'price'] %}

with raw as (

    {{ raw_rows(source('shop', 'items'), columns) }}

),

numbered as (

    select
        *,
        -- The quarantine keeps raw values, but never the PII a supplier pasted into a description.
        {{ redact_pii('description_raw') }} as description_redacted_raw
    from raw

),

typed as (

    select
        'shop' as source_name,
        {{ row_key('shop.items', columns) }} as row_key,
        source_row_number,
        occurrence,
        nullif(trim(item_id_raw), '') as item_id,
        {{ normalise_title('title_raw') }} as title,
        nullif(trim({{ redact_pii(html_unescape('description_raw')) }}), '') as description,
        {{ normalise_title('category_raw') }} as category,
        {{ normalise_title('brand_raw') }} as brand,
        {{ try_cast('trim(price_raw)', 'decimal(12, 2)') }} as list_price,
        title_raw is distinct from {{ normalise_title('title_raw') }} as title_repaired,
        {{ contains_pii('description_raw') }} as description_redacted,
        {{ rule_codes([
            ('duplicate_row', 'occurrence > 1'),
            ('missing_item_id', "nullif(trim(item_id_raw), '') is null"),
            ('missing_title', normalise_title('title_raw') ~ ' is null'),
            ('malformed_price', "nullif(trim(price_raw), '') is not null and " ~ try_cast('trim(price_raw)', 'decimal(12, 2)') ~ ' is null'),
        ]) }} as rule_codes,
        {{ row_to_json(['item_id', 'title', 'description_redacted', 'category', 'brand', 'price']) }} as raw_values
    from numbered

)

select * from typed
