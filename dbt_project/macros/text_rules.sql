{#- Text rules shared by every adapter: one normal form for titles, and PII redaction in free text. -#}

{# Whitespace, case and HTML-entity variants of a title -> one Title Case form. #}
{% macro normalise_title(expr) -%}
    nullif({{ title_case(regexp_replace_all('trim(' ~ html_unescape(expr) ~ ')', '\\s+', ' ')) }}, '')
{%- endmacro %}

{% macro email_pattern() -%}[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}{%- endmacro %}
{#- A phone number: an international prefix, or a trunk 0 with grouped digits (never a bare digit run,
    so ids and digests do not match). -#}
{% macro phone_pattern() -%}(\+[0-9]{1,3}[ -]?[0-9][0-9 ()-]{6,}[0-9])|(\b0[0-9]{2,4}[ -][0-9]{3,4}[ -]?[0-9]{3,4}\b){%- endmacro %}

{# Free text with e-mail addresses and phone numbers replaced by placeholders. #}
{% macro redact_pii(expr) -%}
    {{ regexp_replace_all(regexp_replace_all(expr, email_pattern(), '[email]'), phone_pattern(), '[phone]') }}
{%- endmacro %}

{# True when text contains an e-mail address or a phone number (the privacy audit). #}
{% macro contains_pii(expr) -%}
    ({{ regexp_matches(expr, email_pattern()) }} or {{ regexp_matches(expr, phone_pattern()) }})
{%- endmacro %}

{#- An identifier that looks like PII (an e-mail address or a phone number used as a user, item or order
    id) becomes a stable digest, 'pii_' and 20 hex digits: the same value gives the same digest in every
    table, so events still join users, and nothing downstream ever sees the address or number. -#}
{% macro pii_safe_id(expr) -%}
    case when {{ contains_pii(expr) }} then 'pii_' || left({{ hash_text(expr) }}, 20) else {{ expr }} end
{%- endmacro %}

{# Attributes parsed from a title: the first colour word, the first material word, the last word. #}
{% macro title_colour(expr) -%}
    {{ title_case(regexp_extract('lower(' ~ expr ~ ')', '\\b(red|blue|green|pink|white|black|ivory|cream|yellow|orange|purple|grey|gray|silver|gold|brown|turquoise|natural|multicolour|rose|lilac|mint|navy|teal|beige|charcoal|amber|jade|clear)\\b')) }}
{%- endmacro %}
{% macro title_material(expr) -%}
    {{ title_case(regexp_extract('lower(' ~ expr ~ ')', '\\b(ceramic|porcelain|glass|wood|wooden|metal|tin|zinc|enamel|cotton|linen|wool|felt|paper|card|plastic|bamboo|wicker|rattan|jute|velvet|silk|leather|stone|copper|brass|iron|steel|wax|resin|acrylic|canvas|fabric|cardboard|terracotta|stoneware|latex|crystal|pearl|shell|lace|beeswax|paraffin|kraft)\\b')) }}
{%- endmacro %}
{#- Words that end many titles without naming the product ("Storage Box Green Spotty", "Tea Tray Large",
    "Gate Plaque 2", "Napkins Set Of 4"): colours, sizes, patterns, counts and pack sizes. -#}
{% macro title_qualifier_pattern() -%}
    ([^a-z]+|\s+(red|blue|green|pink|white|black|ivory|cream|yellow|orange|purple|grey|gray|silver|gold|brown|turquoise|natural|multicolour|rose|lilac|mint|navy|teal|beige|charcoal|large|small|mini|medium|jumbo|big|design|designs|retrospot|polkadot|spotty|spot|spots|stripe|stripes|paisley|assorted|christmas|vintage|antique|colours|colour|set|pack|of|for|in|w|with|and|cm|[a-z]*[0-9][a-z0-9]*))+$
{%- endmacro %}

{#- The product type: the last word of the title once trailing qualifiers are dropped (Mug, Holder, Bag). -#}
{% macro title_product_type(expr) -%}
    {{ title_case(regexp_extract(regexp_replace_all('lower(' ~ expr ~ ')', title_qualifier_pattern(), ''), '([a-z-]+)$')) }}
{%- endmacro %}
