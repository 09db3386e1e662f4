"""Meter firmware simulator: DL/T 645, DL/T 698.45 and Modbus meters on a virtual RS-485 bus."""

__version__ = "0.1.0"
