{{ config(
    enabled=aisle_source() == 'online_retail',
    materialized='incremental',
    unique_key='row_key',
    incremental_strategy=raw_incremental_strategy(),
) }}

{%- set columns = ['InvoiceNo', 'StockCode', 'Description', 'Quantity', 'InvoiceDate', 'UnitPrice', 'CustomerID', 'Country'] %}

with numbered as (

    {{ raw_rows(source('uci_retail', 'invoice_lines'), columns, incremental=true) }}

),

parsed as (

    select
        *,
        {{ try_cast('trim(quantity_raw)', 'integer') }} as quantity_signed,
        upper(trim(invoiceno_raw)) like 'C%' as is_cancellation,
        {{ regexp_replace_all('trim(description_raw)', '\\s+', ' ') }} as description_clean
    from numbered

),

-- PII stops here, as in the shop's staging: ids that look like PII become stable digests, text is
-- redacted, and the raw values kept for the quarantine are redacted value by value.
typed as (

    select
        'online_retail' as source_name,
        {{ row_key('uci_retail.invoice_lines') }} as row_key,
        source_file,
        source_row_number,
        raw_digest,
        occurrence,
        cast({{ try_cast(try_cast('customerid_raw', 'double'), 'bigint') }} as {{ text_type() }}) as user_id,
        {{ pii_safe_id("nullif(upper(trim(stockcode_raw)), '')") }} as item_id,
        case when is_cancellation then 'return' else 'purchase' end as event_type,
        {{ try_parse_timestamp('trim(invoicedate_raw)') }} as event_at,
        case when is_cancellation then abs(quantity_signed) else quantity_signed end as quantity,
        {{ try_cast('trim(unitprice_raw)', 'decimal(12, 2)') }} as unit_price,
        {{ pii_safe_id("nullif(upper(trim(invoiceno_raw)), '')") }} as order_id,
        {{ redact_pii("nullif(trim(country_raw), '')") }} as country,
        {{ redact_pii('description_clean') }} as item_text,
        {{ rule_codes([
            ('non_product_code', "not " ~ regexp_matches('trim(stockcode_raw)', '^[0-9]{5}[A-Za-z]*$')),
            ('stock_note', "not is_cancellation and quantity_signed < 0 and (description_clean is null or "
                ~ regexp_matches('lower(description_clean)', var('stock_note_pattern', '(^[?]+)|damage|check|lost|missing|thrown|throw away|wet|smashed|crush|adjust|unsaleable|sold as|wrong|mix|found|rust|ebay|dotcom|amazon|faulty|broken|display|sample|mould|incorrect|crack|smudge|destroy|label|barcode') ) ~ ")"),
            ('malformed_quantity', "quantity_signed is null"),
            ('malformed_price', "nullif(trim(unitprice_raw), '') is null or " ~ try_cast('trim(unitprice_raw)', 'decimal(12, 2)') ~ " is null"),
            ('non_positive_quantity', "not is_cancellation and quantity_signed <= 0"),
        ]) }} as adapter_rule_codes,
        {{ row_to_json(columns) }} as raw_values
    from parsed

)

select * from typed
