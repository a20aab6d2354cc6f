-- completeness: every raw row is either clean or quarantined, per relation (returns failing rows).
{{ config(severity='error', tags=['completeness']) }}

select *
from {{ ref('fct_row_conservation') }}
where not is_balanced
