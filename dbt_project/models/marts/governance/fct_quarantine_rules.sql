-- One row per quarantined row and rule it broke, with the rule's dimension: counts by rule come from here.

with exploded as (

    select source_name, relation, row_key, {{ explode_codes('rule_codes') }} as rule_code
    from {{ ref('fct_quarantine') }}

)

select exploded.*, rules.dimension, rules.action
from exploded
left join {{ ref('rules') }} as rules on exploded.rule_code = rules.rule_code
