"""Aisle on Apache Spark: the local session, and scoring sharded over users and items (docs/spark.md)."""
