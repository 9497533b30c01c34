"""Registry side of corral: storage, catalogue, upstream mirroring and the wire protocol."""

__version__ = "0.1.0"
