"""Request -> reply logic, one module per service. No sockets here."""

from socklab.protocol import DEFAULT_PORTS

SERVICE_NAMES = tuple(DEFAULT_PORTS)

__all__ = ["DEFAULT_PORTS", "SERVICE_NAMES"]
