{{ config(enabled=uses_canonical_files()) }}

{%- set columns = ['user_id', 'email', 'phone', 'full_name', 'country', 'signed_up_at'] %}

with numbered as (

    {{ raw_rows(source('shop', 'users'), columns) }}

),

-- PII stops here: the e-mail survives only as a digest, phone and name are dropped, and the
-- quarantine keeps the row key, never the raw PII values.
typed as (

    select
        'shop' as source_name,
        {{ row_key('shop.users', columns) }} as row_key,
        source_row_number,
        occurrence,
        nullif(trim(user_id_raw), '') as user_id,
        {{ hash_text('lower(trim(email_raw))') }} as email_sha256,
        nullif(trim(country_raw), '') as country,
        {{ try_parse_timestamp('trim(signed_up_at_raw)') }} as signed_up_at,
        {{ rule_codes([
            ('duplicate_row', 'occurrence > 1'),
            ('missing_user_row_id', "nullif(trim(user_id_raw), '') is null"),
        ]) }} as rule_codes,
        {{ row_to_json(['user_id', 'country', 'signed_up_at']) }} as raw_values
    from numbered

)

select * from typed
