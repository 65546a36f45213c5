"""The HTTP side: the ATM page, the playground, the live dashboard and ``/metrics``.

It runs on the same event loop as the TCP services and calls them through their sessions
(``Service.open_session(...).handle_json(...)``), like any other dialect: never the ledger
directly. ``aiohttp`` is an optional extra (``pip install 'socklab[web]'``).
"""
