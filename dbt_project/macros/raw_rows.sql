{#- Helpers shared by every adapter's staging model: raw columns as trimmed text, the row identity,
    and the duplicate occurrence number. -#}

{% macro raw_text_columns(columns) -%}
    {%- for c in columns %}
        cast({{ adapter.quote(c) }} as varchar) as {{ c | lower }}_raw{% if not loop.last %},{% endif %}
    {%- endfor %}
{%- endmacro %}

{# 1 for the first copy of a raw row, 2 for its first exact duplicate, and so on. #}
{% macro occurrence(columns) -%}
    row_number() over (
        partition by {% for c in columns %}{{ c | lower }}_raw{% if not loop.last %}, {% endif %}{% endfor %}
        order by source_row_number
    )
{%- endmacro %}

{# A stable row identity: a digest of the raw values plus the duplicate occurrence number. #}
{% macro row_key(relation_name, columns) -%}
    {%- set parts = [] -%}
    {%- for c in columns -%}{%- do parts.append("coalesce(" ~ (c | lower) ~ "_raw, '<null>')") -%}{%- endfor -%}
    '{{ relation_name }}:' || left({{ hash_text("concat_ws('|', " ~ parts | join(', ') ~ ")") }}, 16)
        || '#' || cast(occurrence as varchar)
{%- endmacro %}

{#- Every raw row of a relation as text, with its position in the file and its duplicate occurrence
    number: the first step of every staging model. -#}
{% macro raw_rows(relation, columns) -%}
    select *, {{ occurrence(columns) }} as occurrence
    from (
        select
            {{ source_row_number() }} as source_row_number,
            {{ raw_text_columns(columns) }}
        from {{ relation }}
    ) as raw
{%- endmacro %}
