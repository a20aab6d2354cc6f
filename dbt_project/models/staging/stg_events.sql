{{ config(materialized='view') }}

-- The active adapter's staged events under one source-agnostic name: AISLE_SOURCE picks the adapter here,
-- in staging (adapter_model), so intermediate models and marts ref stg_events and never ask which source
-- is active. A view: the adapter's table is not copied.

select * from {{ ref(adapter_model('events')) }}
