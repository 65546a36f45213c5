"""What goes over the wire, as typed values shared by servers, clients, bench and checker."""

DEFAULT_PORTS: dict[str, int] = {
    "exchange": 8000,
    "text": 5050,
    "numbers": 5051,
    "bank": 5052,
    "web": 8080,
}
"""Each service's port when none is given."""
