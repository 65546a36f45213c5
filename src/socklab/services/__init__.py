"""Request -> reply logic, one module per service. No sockets here."""

DEFAULT_PORTS = {"exchange": 8000, "text": 5050, "numbers": 5051, "bank": 5052}
SERVICE_NAMES = tuple(DEFAULT_PORTS)
