{{ config(enabled=aisle_source() == 'online_retail') }}

-- Online Retail has no user register: a customer is known from their first clean purchase (a guest line
-- has no CustomerID; a cancellation registers nobody). Derived rows only, so nothing here is ever
-- quarantined.

with clean_events as (

    {{ clean_staged_events(ref('stg_uci_retail__events')) }}

),

{{ derived_users_ctes('clean_events', 'online_retail', event_types=['purchase']) }}

select * from derived_users
