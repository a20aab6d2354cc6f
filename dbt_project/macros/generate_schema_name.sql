{#- Use the custom schema name as is (staging, intermediate, governance), not target_schema + '_' + name,
    so the warehouse reads like the project layout. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}{{ target.schema }}{%- else -%}{{ custom_schema_name | trim }}{%- endif -%}
{%- endmacro %}
