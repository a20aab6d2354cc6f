{{ config(enabled=aisle_source() == 'online_retail') }}

-- Online Retail publishes no catalogue: its items are the stock codes of its clean invoice lines (rules
-- of stg_uci_retail__events and every common rule passed), each titled by its most frequent normalised
-- Description. Derived rows only, so nothing here is ever quarantined.

with clean_events as (

    {{ clean_staged_events(ref('stg_uci_retail__events'), cut=catalogue_as_of_timestamp()) }}

),

{{ derived_items_ctes('clean_events', 'online_retail') }}

select * from derived_items
