{{ config(
    enabled=uses_canonical_files(),
    materialized='incremental',
    unique_key='row_key',
    incremental_strategy=raw_incremental_strategy(),
) }}

{#- The search log is optional (a missing file reads as no rows), and so is its position column. One raw
    row per interaction: a search with no interaction is one row with action none and no item. -#}
{%- set columns = canonical_columns('searches') %}

with numbered as (

    {{ raw_rows(source('shop', 'searches'), columns, 'searches', incremental=true) }}

),

-- PII stops here: the typed query is normalised and redacted (normalise_query), ids that look like an
-- e-mail address or a phone number become stable digests (pii_safe_id), and the raw values kept for the
-- quarantine are redacted value by value (row_to_json). The query as typed never leaves this model.
typed as (

    select
        'shop' as source_name,
        {{ row_key('shop.searches') }} as row_key,
        source_file,
        source_row_number,
        raw_digest,
        occurrence,
        {{ pii_safe_id("nullif(trim(search_id_raw), '')") }} as search_id,
        {{ pii_safe_id("nullif(trim(user_id_raw), '')") }} as user_id,
        {{ normalise_query('query_raw') }} as query,
        cast(coalesce(length(trim(query_raw)), 0) as bigint) as query_chars,
        {{ try_parse_timestamp('trim(searched_at_raw)') }} as searched_at,
        {{ pii_safe_id("nullif(trim(item_id_raw), '')") }} as item_id,
        {{ redact_pii("lower(trim(action_raw))") }} as action,
        {{ try_cast('trim(position_raw)', 'integer') }} as position,
        {{ query_had_markup('query_raw') }} as query_markup_stripped,
        coalesce({{ contains_pii(query_stripped('query_raw')) }}, false) as query_redacted,
        {{ rule_codes([
            ('missing_search_id', "nullif(trim(search_id_raw), '') is null"),
            ('malformed_action', "coalesce(lower(trim(action_raw)), '') not in ('none', 'click', 'cart', 'purchase')"
                ~ " or (lower(trim(action_raw)) = 'none') <> (nullif(trim(item_id_raw), '') is null)"),
            ('malformed_position', "nullif(trim(position_raw), '') is not null and coalesce("
                ~ try_cast('trim(position_raw)', 'integer') ~ " < 1, true)"),
        ]) }} as adapter_rule_codes,
        {{ row_to_json(columns) }} as raw_values
    from numbered

)

select * from typed
