"""CLI command modules; each exposes ``COMMANDS`` (see edgekit.cli)."""
