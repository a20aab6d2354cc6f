{#- Our own generic tests (no dbt-utils here). Each returns the failing rows. -#}

{# uniqueness: no two rows share this combination of columns. The primary-key test of a model keyed by
   several columns (the feature marts, fct_quarantine_rules), with not_null on each of them. #}
{% test unique_combination_of_columns(model, combination_of_columns) %}
select {{ combination_of_columns | join(', ') }}, count(*) as n
from {{ model }}
group by {{ combination_of_columns | join(', ') }}
having count(*) > 1
{% endtest %}

{# validity: values within [min_value, max_value] (either bound optional). #}
{% test accepted_range(model, column_name, min_value=none, max_value=none) %}
select {{ column_name }}
from {{ model }}
where {{ column_name }} is not null
  and (false
  {%- if min_value is not none %} or {{ column_name }} < {{ min_value }}{% endif %}
  {%- if max_value is not none %} or {{ column_name }} > {{ max_value }}{% endif %})
{% endtest %}

{# timeliness: nothing later than the build. #}
{% test not_in_future(model, column_name) %}
select {{ column_name }} from {{ model }} where {{ column_name }} > current_timestamp
{% endtest %}

{# privacy: no text column (nor list of texts) of the model holds an e-mail address or a phone number. #}
{% test no_pii(model) %}
{%- set columns = adapter.get_columns_in_relation(model) -%}
{%- set text_columns = [] -%}
{%- for col in columns if col.is_string() or '[]' in col.dtype or (col.dtype | lower).startswith('struct') -%}
{%- do text_columns.append(col) -%}
{%- endfor -%}
{%- if text_columns | length == 0 %}
select 1 as no_text_columns where false
{%- else %}
{%- for col in text_columns %}
select '{{ col.name }}' as column_name, cast({{ adapter.quote(col.name) }} as {{ text_type() }}) as value
from {{ model }}
where {{ contains_pii('cast(' ~ adapter.quote(col.name) ~ ' as ' ~ text_type() ~ ')') }}
{% if not loop.last %}union all{% endif %}
{%- endfor %}
{%- endif %}
{% endtest %}

{# balance: the share of rows meeting a condition stays within bounds. #}
{% test share_within(model, condition, min_share=0, max_share=1) %}
select share from (
    select avg(case when {{ condition }} then 1.0 else 0.0 end) as share from {{ model }}
) as s
where share < {{ min_share }} or share > {{ max_share }}
{% endtest %}

{# timeliness: the newest value is no older than max_days before the build (source freshness, as a test). #}
{% test fresh_within(model, column_name, max_days) %}
select max({{ column_name }}) as newest
from {{ model }}
having max({{ column_name }}) < {{ minus_days('current_timestamp', max_days) }}
{% endtest %}
