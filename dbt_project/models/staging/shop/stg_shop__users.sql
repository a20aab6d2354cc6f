{{ config(enabled=uses_canonical_files()) }}

{#- The users file is optional (a missing one reads as no rows, and then the users are derived from the
    shop's clean events), and only user_id is required in it. -#}
{%- set columns = canonical_columns('users') %}

with numbered as (

    {{ raw_rows(source('shop', 'users'), columns, 'users') }}

),

-- PII stops here: the e-mail survives only as a digest, phone and name are dropped, a user id that
-- looks like an e-mail address or a phone number becomes the same stable digest as in the events
-- (pii_safe_id), and the quarantine keeps only the non-PII columns, redacted value by value.
typed as (

    select
        'shop' as source_name,
        {{ row_key('shop.users') }} as row_key,
        source_file,
        source_row_number,
        occurrence,
        {{ pii_safe_id("nullif(trim(user_id_raw), '')") }} as user_id,
        {{ hash_text('lower(trim(email_raw))') }} as email_sha256,
        {{ redact_pii("nullif(trim(country_raw), '')") }} as country,
        {{ try_parse_timestamp('trim(signed_up_at_raw)') }} as signed_up_at,
        false as is_derived,
        {{ rule_codes([
            ('duplicate_row', 'occurrence > 1'),
            ('missing_user_row_id', "nullif(trim(user_id_raw), '') is null"),
        ]) }} as rule_codes,
        {{ row_to_json(['user_id', 'country', 'signed_up_at']) }} as raw_values
    from numbered

),

-- With no user rows at all, every user of a clean event (any type) is a user, signed up at their first
-- clean event.
clean_events as (

    {{ clean_staged_events(ref('stg_shop__events')) }}

),

{{ derived_users_ctes('clean_events', 'shop') }}

select * from typed
union all
select * from derived_users
where not exists (select 1 from typed)
