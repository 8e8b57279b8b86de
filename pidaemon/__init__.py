"""pi-infer: real-time camera inference daemon for the Raspberry Pi and any Linux box."""

__version__ = "0.1.0"
