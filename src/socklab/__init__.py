"""socklab: the client/server systems of two socket-programming labs, as real software."""

__version__ = "0.1.0"
