{{ config(
    enabled=uses_canonical_files(),
    materialized='incremental',
    unique_key='row_key',
    incremental_strategy=raw_incremental_strategy(),
) }}

{#- country and title are optional columns of the contract: a file without them reads them as null. -#}
{%- set columns = canonical_columns('events') %}

with numbered as (

    {{ raw_rows(source('shop', 'events'), columns, 'events', incremental=true) }}

),

-- PII stops here: an id that looks like an e-mail address or a phone number becomes a stable digest
-- (pii_safe_id), free text is redacted, and the raw values kept for the quarantine are redacted too.
typed as (

    select
        'shop' as source_name,
        {{ row_key('shop.events') }} as row_key,
        source_file,
        source_row_number,
        raw_digest,
        occurrence,
        {{ pii_safe_id("nullif(trim(user_id_raw), '')") }} as user_id,
        {{ pii_safe_id("nullif(trim(item_id_raw), '')") }} as item_id,
        {{ redact_pii('lower(trim(event_type_raw))') }} as event_type,
        {{ try_parse_timestamp('trim(event_at_raw)') }} as event_at,
        {{ try_cast('trim(quantity_raw)', 'integer') }} as quantity,
        {{ try_cast('trim(unit_price_raw)', 'decimal(12, 2)') }} as unit_price,
        {{ pii_safe_id("nullif(trim(order_id_raw), '')") }} as order_id,
        {{ redact_pii("nullif(trim(country_raw), '')") }} as country,
        {{ redact_pii("nullif(trim(title_raw), '')") }} as item_text,
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
