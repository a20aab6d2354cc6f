{#-
  Items and users derived from a source's own clean events, for a source that supplies no catalogue or no
  users (Online Retail; a shop folder without items or users files). Each macro writes CTEs to splice into
  a staging model's chain, ending in derived_items / derived_users, shaped like the staged items and users
  rows (is_derived true, no raw row behind them, so never quarantined and never counted as raw rows).
-#}

{#- One row per item seen in a clean view, cart or purchase (returns do not name an item: Online Retail's
    cancellations repeat the text of any era), titled by the most frequent normalised text its events
    carry, else by its id; the category is the product type parsed from that title. -#}
{% macro derived_items_ctes(clean_events, source_name) -%}
event_items as (

    select distinct item_id from {{ clean_events }} where event_type <> 'return'

),

-- Count the raw texts first and normalise only the distinct ones (thousands, not every sale line).
raw_text_counts as (

    select item_id, item_text, count(*) as n
    from {{ clean_events }}
    where event_type <> 'return' and item_text is not null
    group by item_id, item_text

),

text_counts as (

    select item_id, {{ normalise_title('item_text') }} as title, sum(n) as n
    from raw_text_counts
    group by 1, 2

),

ranked_text as (

    select
        item_id,
        title,
        row_number() over (partition by item_id order by n desc, title) as text_rank
    from text_counts
    where title is not null

),

derived_items as (

    select
        '{{ source_name }}' as source_name,
        '{{ source_name }}.derived_items:' || event_items.item_id as row_key,
        cast(null as {{ text_type() }}) as source_file,
        cast(null as bigint) as source_row_number,
        cast(null as bigint) as occurrence,
        event_items.item_id,
        coalesce(ranked_text.title, event_items.item_id) as title,
        cast(null as {{ text_type() }}) as description,
        {{ title_product_type('ranked_text.title') }} as category,
        cast(null as {{ text_type() }}) as brand,
        cast(null as decimal(12, 2)) as list_price,
        false as title_repaired,
        false as description_redacted,
        ranked_text.title is null as title_is_id,
        true as is_derived,
        cast(null as {{ text_type() }}) as rule_codes,
        cast(null as {{ text_type() }}) as raw_values
    from event_items
    left join ranked_text
        on event_items.item_id = ranked_text.item_id
        and ranked_text.text_rank = 1

)
{%- endmacro %}

{#- One row per user of the clean events (only those of `event_types` where given), signed up at their
    first such event; no registered country or e-mail is known. -#}
{% macro derived_users_ctes(clean_events, source_name, event_types=none) -%}
derived_users as (

    select
        '{{ source_name }}' as source_name,
        '{{ source_name }}.derived_users:' || user_id as row_key,
        cast(null as {{ text_type() }}) as source_file,
        cast(null as bigint) as source_row_number,
        cast(null as bigint) as occurrence,
        user_id,
        cast(null as {{ text_type() }}) as email_sha256,
        cast(null as {{ text_type() }}) as country,
        min(event_at) as signed_up_at,
        true as is_derived,
        cast(null as {{ text_type() }}) as rule_codes,
        cast(null as {{ text_type() }}) as raw_values
    from {{ clean_events }}
    where user_id is not null
        {%- if event_types %}
        and event_type in ('{{ event_types | join("', '") }}')
        {%- endif %}
    group by user_id

)
{%- endmacro %}
