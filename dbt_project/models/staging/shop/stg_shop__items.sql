{{ config(enabled=uses_canonical_files()) }}

{#- The items file is optional, and only item_id and title are required in it: a missing column reads
    as null, a missing file as no rows, and then the items are derived from the shop's clean events. -#}
{%- set columns = canonical_columns('items') %}

with numbered as (

    {{ raw_rows(source('shop', 'items'), columns, 'items') }}

),

-- PII stops here: an id that looks like PII becomes a stable digest, every text is redacted, and the
-- raw values kept for the quarantine are redacted value by value (row_to_json).
typed as (

    select
        'shop' as source_name,
        {{ row_key('shop.items') }} as row_key,
        source_file,
        source_row_number,
        occurrence,
        {{ pii_safe_id("nullif(trim(item_id_raw), '')") }} as item_id,
        {{ redact_pii(normalise_title('title_raw')) }} as title,
        nullif(trim({{ redact_pii(html_unescape('description_raw')) }}), '') as description,
        {{ redact_pii(normalise_title('category_raw')) }} as category,
        {{ redact_pii(normalise_title('brand_raw')) }} as brand,
        {{ try_cast('trim(price_raw)', 'decimal(12, 2)') }} as list_price,
        title_raw is distinct from {{ normalise_title('title_raw') }} as title_repaired,
        {{ contains_pii('description_raw') }} as description_redacted,
        false as title_is_id,
        false as is_derived,
        {{ rule_codes([
            ('duplicate_row', 'occurrence > 1'),
            ('missing_item_id', "nullif(trim(item_id_raw), '') is null"),
            ('missing_title', normalise_title('title_raw') ~ ' is null'),
            ('malformed_price', "nullif(trim(price_raw), '') is not null and " ~ try_cast('trim(price_raw)', 'decimal(12, 2)') ~ ' is null'),
        ]) }} as rule_codes,
        {{ row_to_json(columns) }} as raw_values
    from numbered

),

-- With no item rows at all, the catalogue is derived from the events that pass every rule (the shop
-- events' optional title names each item; an item whose events carry none is named by its id).
clean_events as (

    {{ clean_staged_events(ref('stg_shop__events'), cut=catalogue_as_of_timestamp()) }}

),

{{ derived_items_ctes('clean_events', 'shop') }}

select * from typed
union all
select * from derived_items
where not exists (select 1 from typed)
