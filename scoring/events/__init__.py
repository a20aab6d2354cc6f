"""Shoppers' events sent to the server: the durable event log and the live session they are merged into."""
