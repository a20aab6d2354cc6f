{{ config(enabled=aisle_source() == 'online_retail') }}

-- Online Retail logs no searches: the adapter hands on an empty search log with the staged columns, so
-- stg_searches and every search model build (empty) whichever source is active.

select
    cast(null as {{ text_type() }}) as source_name,
    cast(null as {{ text_type() }}) as row_key,
    cast(null as {{ text_type() }}) as source_file,
    cast(null as bigint) as source_row_number,
    cast(null as {{ text_type() }}) as raw_digest,
    cast(null as bigint) as occurrence,
    cast(null as {{ text_type() }}) as search_id,
    cast(null as {{ text_type() }}) as user_id,
    cast(null as {{ text_type() }}) as query,
    cast(null as bigint) as query_chars,
    cast(null as timestamp) as searched_at,
    cast(null as {{ text_type() }}) as item_id,
    cast(null as {{ text_type() }}) as action,
    cast(null as integer) as position,
    cast(null as boolean) as query_markup_stripped,
    cast(null as boolean) as query_redacted,
    cast(null as {{ text_type() }}) as adapter_rule_codes,
    cast(null as {{ text_type() }}) as raw_values
where false
