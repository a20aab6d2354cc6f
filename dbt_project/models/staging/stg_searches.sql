{{ config(materialized='view') }}

-- The active adapter's staged search log under one source-agnostic name: AISLE_SOURCE picks the adapter
-- here, in staging (adapter_model), so intermediate models and marts ref stg_searches and never ask which
-- source is active. A view: the adapter's table is not copied.

select * from {{ ref(adapter_model('searches')) }}
