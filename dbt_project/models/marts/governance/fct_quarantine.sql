-- Every rejected raw row of every relation, with the rules it broke and its raw values: nothing is
-- dropped silently. Users' raw values are limited to non-PII columns in staging, and search queries'
-- raw values are PII-redacted there like every other; items and users that staging derived from the
-- events have no raw row and are never quarantined. source_file and source_row_number name the raw file
-- (the initial file or a dated drop) and the row's 0-based position in it.

select source_name, 'events' as relation, row_key, source_file, source_row_number, rule_codes, raw_values
from {{ ref('int_events_checked') }}
where not is_clean
union all
select source_name, 'items', row_key, source_file, source_row_number, rule_codes, raw_values
from {{ ref('stg_items') }}
where rule_codes is not null
union all
select source_name, 'users', row_key, source_file, source_row_number, rule_codes, raw_values
from {{ ref('stg_users') }}
where rule_codes is not null
union all
select source_name, 'searches', row_key, source_file, source_row_number, rule_codes, raw_values
from {{ ref('int_searches_checked') }}
where not is_clean
