"""The package's version: one place, read by the wheel's metadata, the records headers and ``advpnml --version``."""

__version__ = "0.1.0"
