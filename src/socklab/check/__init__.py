"""``socklab check``: a conformance suite for servers of the labs' protocols."""
