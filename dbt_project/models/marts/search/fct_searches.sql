{{ config(materialized='external') }}

-- The clean search log, one row per interaction with a search's results (a search with no interaction is
-- one row with action none): the normalised, PII-free query, for training pairs, head queries and the
-- search statistics marts.

select
    row_key,
    search_id,
    user_id,
    query,
    searched_at,
    item_id,
    action,
    position
from {{ ref('int_searches_checked') }}
where is_clean
