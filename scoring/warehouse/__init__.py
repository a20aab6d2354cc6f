"""The warehouse: dbt builds it (dbt.py), the scorer reads it (tables.py), the demo shop's truth grades
it (quality.py)."""
