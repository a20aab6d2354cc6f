"""Offline evaluation (`aisle evaluate`): the protocol, its metrics, the peers and the HTML page."""
