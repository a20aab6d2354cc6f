{{ config(enabled=uses_canonical_files()) }}

{#- The users file is optional (a missing one reads as no rows), and only user_id is required in it. -#}
{%- set columns = ['user_id', 'email', 'phone', 'full_name', 'country', 'signed_up_at'] %}

with numbered as (

    {{ raw_rows(source('shop', 'users'), columns, 'users') }}

),

-- PII stops here: the e-mail survives only as a digest, phone and name are dropped, a user id that
-- looks like an e-mail address or a phone number becomes the same stable digest as in the events
-- (pii_safe_id), and the quarantine keeps only the non-PII columns, redacted value by value.
typed as (

    select
        'shop' as source_name,
        {{ row_key('shop.users', columns) }} as row_key,
        source_row_number,
        occurrence,
        {{ pii_safe_id("nullif(trim(user_id_raw), '')") }} as user_id,
        {{ hash_text('lower(trim(email_raw))') }} as email_sha256,
        {{ redact_pii("nullif(trim(country_raw), '')") }} as country,
        {{ try_parse_timestamp('trim(signed_up_at_raw)') }} as signed_up_at,
        {{ rule_codes([
            ('duplicate_row', 'occurrence > 1'),
            ('missing_user_row_id', "nullif(trim(user_id_raw), '') is null"),
        ]) }} as rule_codes,
        {{ row_to_json(['user_id', 'country', 'signed_up_at']) }} as raw_values
    from numbered

)

select * from typed
