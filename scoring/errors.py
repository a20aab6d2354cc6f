"""The failures Aisle expects and explains: each names what broke and what to do, so the CLI prints its
message and exits 1 without a traceback. Anything else is a bug and keeps its traceback."""

from __future__ import annotations


class AisleError(Exception):
    """A known failure (a broken contract, a failed build or check, a run already in progress)."""
