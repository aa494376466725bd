"""The fieldcap agent: configuration, local catalog, recorder, daemon and the operator CLI."""

from agent.errors import CatalogError, ConfigError, FieldcapError

__all__ = ["CatalogError", "ConfigError", "FieldcapError"]
