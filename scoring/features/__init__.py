"""Feast: apply, materialize, point-in-time reads, and whole-table swaps of the online store."""
