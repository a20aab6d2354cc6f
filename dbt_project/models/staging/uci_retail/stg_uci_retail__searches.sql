{{ config(enabled=aisle_source() == 'online_retail') }}

-- Online Retail logs no searches: the adapter hands on an empty search log with the staged columns, so
-- stg_searches and every search model build (empty) whichever source is active.

select
    cast(null as varchar) as source_name,
    cast(null as varchar) as row_key,
    cast(null as varchar) as source_file,
    cast(null as bigint) as source_row_number,
    cast(null as varchar) as raw_digest,
    cast(null as bigint) as occurrence,
    cast(null as varchar) as search_id,
    cast(null as varchar) as user_id,
    cast(null as varchar) as query,
    cast(null as bigint) as query_chars,
    cast(null as timestamp) as searched_at,
    cast(null as varchar) as item_id,
    cast(null as varchar) as action,
    cast(null as integer) as position,
    cast(null as boolean) as query_markup_stripped,
    cast(null as boolean) as query_redacted,
    cast(null as varchar) as adapter_rule_codes,
    cast(null as varchar) as raw_values
where false
