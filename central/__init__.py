"""Central server: ingests readings, validates them, rates bills, runs dunning and
remote trip/reconnect."""

__version__ = "0.1.0"
