"""Edge agent for concentrator gateways: reads meters on RS-485, keeps every reading
in SQLite, sends it over MQTT."""

__version__ = "0.1.0"
