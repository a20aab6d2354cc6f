{#-
  The common event rules, defined once: int_events_checked labels every staged event with them, and a
  source without a catalogue or users file derives its items and users in staging from the events that
  pass them (clean_staged_events), so the derived rows come from exactly the events int_events_clean holds.
  Thresholds are dbt vars read from the environment (see dbt_project.yml).
-#}

{#- The typical price of each item, from purchase lines that pass every other rule, to spot price outliers.
    In the price's own type: DuckDB's median of a decimal is a decimal, Spark's percentile a double. -#}
{% macro item_median_prices(events) -%}
    select item_id, cast({{ median('unit_price') }} as decimal(12, 2)) as median_unit_price
    from {{ events }}
    where adapter_rule_codes is null and occurrence = 1 and event_type = 'purchase' and unit_price > 0
    group by item_id
{%- endmacro %}

{#- (code, condition) of every common event rule, written over `events` left-joined to `item_prices`
    (item_median_prices). orphan_condition is the catalogue check: false where no catalogue is supplied.
    cut is the timestamp after_as_of holds events back from (as_of_timestamp() by default). -#}
{% macro common_event_rules(orphan_condition='false', cut=none) -%}
    {{ return([
        ('duplicate_row', 'events.occurrence > 1'),
        ('missing_item_id', 'events.item_id is null'),
        ('malformed_timestamp', 'events.event_at is null'),
        ('non_positive_price', "events.event_type in ('purchase', 'return') and events.unit_price <= 0"),
        ('quantity_outlier', 'abs(events.quantity) > ' ~ (var('max_line_quantity') | int)),
        ('price_outlier', 'events.unit_price > ' ~ (var('max_price_ratio') | float) ~ ' * item_prices.median_unit_price'),
        ('future_timestamp', 'events.event_at > current_timestamp'),
        ('orphan_item_id', orphan_condition),
        ('after_as_of', 'events.event_at >= ' ~ (cut or as_of_timestamp())),
    ]) }}
{%- endmacro %}

{#- The staged events of one adapter that break neither the adapter's rules nor a common one: the clean
    events, as int_events_clean holds them when no catalogue is supplied (then no event is an orphan).
    With cut (a derived catalogue: catalogue_as_of_timestamp()), the as-of rule holds back at that
    timestamp instead. -#}
{% macro clean_staged_events(events, cut=none) -%}
    select events.*
    from {{ events }} as events
    left join (
        {{ item_median_prices(events) }}
    ) as item_prices on events.item_id = item_prices.item_id
    where events.adapter_rule_codes is null
        and {{ rule_codes(common_event_rules(cut=cut)) }} is null
{%- endmacro %}
