"""Settings: loaded once, frozen, passed down. See config.settings.load."""

from config.settings import ConfigError, Settings, Unit, UnitNames, load

__all__ = ["ConfigError", "Settings", "Unit", "UnitNames", "load"]
