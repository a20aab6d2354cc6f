"""Online lookups: Feast's feature server behind a read-only guard with request caps."""
