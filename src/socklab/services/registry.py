"""Every service ``socklab serve`` can run, in one table: name -> (class, typed options, port).

How this works: a ``ServiceEntry`` names its service class by import path
(``"socklab.services.text:TextService"``), so the table imports nothing until a service is
built, and moving a service's module changes one line. Its options are a frozen dataclass
validated on construction; ``service_kwargs()`` turns them into the class's keyword
arguments, and ``build`` calls the class with them. ``socklab serve`` parses its command
line into these options and asks the registry for the services; nothing else there knows
a service.

Adding a service (see docs/architecture.md): write its module (a ``Service`` subclass and,
if it takes settings, an options dataclass), then add one ``ServiceEntry`` line to
``SERVICES`` below.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from socklab.errors import RequestRejected
from socklab.ledger import LedgerSettings, split_ledger_url
from socklab.protocol import DEFAULT_PORTS
from socklab.services.base import Service

MAX_PORT = 65535


class ServiceOptions:
    """The base of every service's options: a frozen dataclass of its settings."""

    __slots__ = ()

    def service_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the service's class."""
        return {}

    def one_process_reason(self) -> str | None:
        """Why the service cannot be served by several processes at once, or ``None``."""
        return None


@dataclass(frozen=True, slots=True)
class NoOptions(ServiceOptions):
    """The options of a service that takes none."""


@dataclass(frozen=True, slots=True)
class ExchangeOptions(ServiceOptions):
    name: str = "Socklab Server"
    """The server's name, sent with every answer."""
    seed: int | None = None
    """Seed of the server's random numbers (reproducible runs)."""
    on_out_of_range: Literal["terminate", "reject"] = "terminate"

    def __post_init__(self) -> None:
        """Raises ``ValueError`` for a name the exchange would refuse from a client."""
        from socklab.services.exchange import validate_name  # the exchange's rule, once

        try:
            validate_name(self.name)
        except RequestRejected as exc:
            message = exc.message.removeprefix("client_name ")
            raise ValueError(f"the exchange server's name {message}") from None

    def service_kwargs(self) -> dict[str, Any]:
        return {
            "server_name": self.name,
            "seed": self.seed,
            "on_out_of_range": self.on_out_of_range,
        }


@dataclass(frozen=True, slots=True)
class NumbersOptions(ServiceOptions):
    max_digits: int = 10_000

    def __post_init__(self) -> None:
        """Raises ``ValueError`` for fewer than one digit."""
        if self.max_digits < 1:
            raise ValueError("max_digits must be at least 1")

    def service_kwargs(self) -> dict[str, Any]:
        return {"max_digits": self.max_digits}


# -- the bank ---------------------------------------------------------------------------

DEFAULT_LOGIN_RATE_PER_S = 20.0
DEFAULT_LOGIN_BURST = 200
"""The bank's login limit per client address (the ``BankService`` defaults, which its
tests pin): a burst of 200, then 20 a second."""


def default_ledger_path() -> Path:
    """``$XDG_DATA_HOME/socklab/bank.db``, else ``~/.local/share/socklab/bank.db``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "socklab" / "bank.db"


def resolve_ledger_url(url: str | None) -> str:
    """``url``, or the URL of the default SQLite file (creating its directory).

    Raises ``OSError`` if that directory cannot be created.
    """
    if url:
        return url
    path = default_ledger_path().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


@dataclass(frozen=True, slots=True)
class BankOptions(ServiceOptions):
    """The bank's settings: its ledger, its policy, and the fault injection of the seed."""

    db: str = "sqlite://"
    """The ledger's URL, resolved (see ``resolve_ledger_url``)."""
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    fail_rate: float = 0.0
    fail_mode: Literal["reject", "lose-reply"] = "reject"
    fail_seed: int | None = None
    login_rate_per_s: float = DEFAULT_LOGIN_RATE_PER_S
    """Logins per second per client address, once the burst is spent."""
    login_burst: int = DEFAULT_LOGIN_BURST
    """Logins one client address may make at once."""

    def __post_init__(self) -> None:
        """Raises ``ValueError`` for a rate, burst or fail rate out of range."""
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ValueError("fail_rate must be between 0 and 1")
        if self.login_rate_per_s <= 0:
            raise ValueError("login_rate_per_s must be more than 0")
        if self.login_burst < 1:
            raise ValueError("login_burst must be at least 1")

    def service_kwargs(self) -> dict[str, Any]:
        return {
            "ledger": self.db,
            "settings": self.ledger,
            "fail_rate": self.fail_rate,
            "fail_mode": self.fail_mode,
            "rng": self.fail_seed,
            "login_rate_per_s": self.login_rate_per_s,
            "login_burst": self.login_burst,
        }

    def one_process_reason(self) -> str | None:
        """Why this bank cannot be served by several processes at once, or ``None``.

        Raises ``ValueError`` for a ledger URL it cannot read.
        """
        scheme, _, _ = split_ledger_url(self.db)
        if scheme == "sqlite":
            return (
                "the bank on SQLite runs in one process (its group-commit writer owns the "
                "file); use --workers 1, or --db postgresql://... for several workers"
            )
        return None


def _import(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


# -- the table ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """One line of the registry."""

    name: str
    target: str
    """``"module:Class"``: the ``Service`` subclass, called with ``service_kwargs()``."""
    options: type[ServiceOptions] | str = NoOptions
    """The options class, or its import path (``"module:Class"``); ``options()`` must give
    working defaults."""
    port: int | None = None
    """The default port; ``None``: the service's in ``protocol.DEFAULT_PORTS`` (else 0, a
    free one picked at start)."""

    @property
    def default_port(self) -> int:
        return DEFAULT_PORTS.get(self.name, 0) if self.port is None else self.port

    def load(self) -> type[Service]:
        """The service class. Raises ``ImportError`` or ``AttributeError`` for a bad path."""
        cls: type[Service] = _import(self.target)
        return cls

    def options_type(self) -> type[ServiceOptions]:
        """The options class. Raises ``ImportError`` or ``AttributeError`` for a bad path."""
        if isinstance(self.options, str):
            cls: type[ServiceOptions] = _import(self.options)
            return cls
        return self.options

    def build(self, options: ServiceOptions | None = None) -> Service:
        """The service, configured by ``options`` (default: the options class's defaults).

        Raises ``TypeError`` for options of another service, and what the service's
        constructor raises (``ValueError`` for a bad setting).
        """
        expected = self.options_type()
        chosen = expected() if options is None else options
        if not isinstance(chosen, expected):
            raise TypeError(f"{self.name} takes {expected.__name__}, not {type(chosen).__name__}")
        return self.load()(**chosen.service_kwargs())


class Registry:
    """Services by name, in a fixed order (the order of ``--port-base`` offsets)."""

    def __init__(self, entries: Iterable[ServiceEntry]) -> None:
        """Raises ``ValueError`` for two entries with one name."""
        self._entries: dict[str, ServiceEntry] = {}
        for entry in entries:
            if entry.name in self._entries:
                raise ValueError(f"two services are called {entry.name!r}")
            self._entries[entry.name] = entry

    def __iter__(self) -> Iterator[ServiceEntry]:
        return iter(self._entries.values())

    def __getitem__(self, name: str) -> ServiceEntry:
        """Raises ``KeyError`` for an unknown service."""
        return self._entries[name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def adding(self, *entries: ServiceEntry) -> Registry:
        """A registry with ``entries`` after these ones. Raises ``ValueError`` (a name twice)."""
        return Registry([*self, *entries])

    def ports(
        self, names: Iterable[str], *, port: int | None = None, port_base: int | None = None
    ) -> dict[str, int]:
        """The port of each service in ``names``.

        ``port``: that port (for exactly one service). ``port_base``: the service at
        position ``i`` of the registry (exchange 0, text 1, numbers 2, bank 3) listens on
        ``port_base + i``, whichever services are chosen. Neither: each default port.
        Raises ``ValueError`` for both at once, ``port`` with several services, or a port
        past 65535.
        """
        chosen = list(names)
        if port is not None and port_base is not None:
            raise ValueError("--port and --port-base exclude each other")
        if port is not None:
            if len(chosen) != 1:
                raise ValueError("--port needs exactly one service; each service has its own port")
            return {chosen[0]: port}
        if port_base is None:
            return {name: self[name].default_port for name in chosen}
        offsets = {name: n for n, name in enumerate(self.names)}
        ports = {name: port_base + offsets[name] for name in chosen}
        highest = max(ports.values(), default=port_base)
        if highest > MAX_PORT:
            last = max(chosen, key=ports.__getitem__)
            raise ValueError(
                f"--port-base {port_base} puts {last} on port {highest}, past {MAX_PORT}"
            )
        return ports

    def build_all(
        self, names: Iterable[str], options: Mapping[str, ServiceOptions]
    ) -> list[Service]:
        """The services ``names``, each with its options from ``options`` (else defaults)."""
        return [self[name].build(options.get(name)) for name in names]


SERVICES = Registry(
    [
        ServiceEntry("exchange", "socklab.services.exchange:ExchangeService", ExchangeOptions),
        ServiceEntry("text", "socklab.services.text:TextService"),
        ServiceEntry("numbers", "socklab.services.numbers:NumbersService", NumbersOptions),
        ServiceEntry("bank", "socklab.services.bank:BankService", BankOptions),
    ]
)
"""The services of ``socklab serve``, in the order of their ``--port-base`` offsets."""
