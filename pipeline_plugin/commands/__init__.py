"""Subcommands: one module per command family, each with ``register(subparsers)``."""
