{#- The active raw adapter (AISLE_SOURCE): demo and files both read the canonical contract. -#}
{% macro aisle_source() -%}{{ return(env_var('AISLE_SOURCE', 'demo')) }}{%- endmacro %}

{% macro uses_canonical_files() -%}{{ return(aisle_source() in ['demo', 'files']) }}{%- endmacro %}

{#- Optional cut-off (AISLE_AS_OF): events at or after it are held back from every model. -#}
{% macro as_of_timestamp() -%}
    {%- set as_of = env_var('AISLE_AS_OF', '') -%}
    {%- if as_of -%}cast('{{ as_of }}' as timestamp){%- else -%}null{%- endif -%}
{%- endmacro %}

