"""The service registry: each service built from typed options, ports, and the way to add a
service that docs/architecture.md describes, followed as written."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import sys
from pathlib import Path

import pytest

from helpers import HOST
from socklab.cli.serve import ServeSettings, listeners
from socklab.ledger import LedgerSettings
from socklab.protocol import DEFAULT_PORTS
from socklab.server.runtime import Limits
from socklab.services.bank import BankService
from socklab.services.base import Service
from socklab.services.registry import (
    SERVICES,
    BankOptions,
    ExchangeOptions,
    NoOptions,
    NumbersOptions,
    Registry,
    ServiceEntry,
)

ARCHITECTURE = Path(__file__).parents[2] / "docs" / "architecture.md"
WAIT_S = 20


def test_every_service_is_built_with_its_default_options_and_port() -> None:
    assert SERVICES.names == ("exchange", "text", "numbers", "bank")
    for entry in SERVICES:
        service = entry.build()
        assert isinstance(service, Service)
        assert service.name == entry.name
        assert entry.default_port == DEFAULT_PORTS[entry.name] == service.default_port


def test_options_reach_the_service() -> None:
    exchange = SERVICES["exchange"].build(ExchangeOptions("Lab Server", 7, "reject"))
    assert (exchange.server_name, exchange.on_out_of_range) == ("Lab Server", "reject")  # type: ignore[attr-defined]
    numbers = SERVICES["numbers"].build(NumbersOptions(max_digits=12))
    assert numbers.max_digits == 12  # type: ignore[attr-defined]
    settings = LedgerSettings(max_account_failed_logins=7, group_commit=False)
    options = BankOptions(
        db="sqlite://",
        ledger=settings,
        fail_rate=0.25,
        fail_mode="lose-reply",
        login_rate_per_s=3.0,
        login_burst=4,
    )
    bank = SERVICES["bank"].build(options)
    assert isinstance(bank, BankService)
    assert (bank.fail_rate, bank.fail_mode) == (0.25, "lose-reply")
    assert bank._settings == settings
    assert (bank.login_limiter.rate_per_s, bank.login_limiter.burst) == (3.0, 4)


def test_the_bank_options_default_to_the_bank_services_defaults() -> None:
    defaults = inspect.signature(BankService).parameters
    options = BankOptions()
    assert options.login_rate_per_s == defaults["login_rate_per_s"].default
    assert options.login_burst == defaults["login_burst"].default
    assert options.ledger == LedgerSettings()


@pytest.mark.parametrize(
    "build",
    [
        lambda: BankOptions(fail_rate=1.5),
        lambda: BankOptions(login_rate_per_s=0),
        lambda: BankOptions(login_burst=0),
        lambda: NumbersOptions(max_digits=0),
    ],
    ids=["fail-rate", "login-rate", "login-burst", "max-digits"],
)
def test_options_refuse_bad_values(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


def test_options_of_another_service_are_refused() -> None:
    with pytest.raises(TypeError, match="numbers takes NumbersOptions, not NoOptions"):
        SERVICES["numbers"].build(NoOptions())


def test_only_the_bank_on_sqlite_needs_one_process() -> None:
    assert "runs in one process" in (BankOptions(db="sqlite:///x.db").one_process_reason() or "")
    assert BankOptions(db="postgresql://u@h/db").one_process_reason() is None
    assert NumbersOptions().one_process_reason() is None
    with pytest.raises(ValueError, match="unsupported ledger URL scheme"):
        BankOptions(db="mysql://x").one_process_reason()


def test_ports_default_single_and_shifted() -> None:
    assert SERVICES.ports(["text", "bank"]) == {"text": 5050, "bank": 5052}
    assert SERVICES.ports(["numbers"], port=0) == {"numbers": 0}
    every = SERVICES.ports(SERVICES.names, port_base=7000)
    assert every == {"exchange": 7000, "text": 7001, "numbers": 7002, "bank": 7003}
    assert SERVICES.ports(["bank"], port_base=7000) == {"bank": 7003}  # whichever run
    assert SERVICES.ports(["exchange"], port_base=65535) == {"exchange": 65535}


@pytest.mark.parametrize(
    ("names", "port", "base", "error"),
    [
        (["text", "bank"], 6000, None, "--port needs exactly one service"),
        (["text"], 6000, 7000, "exclude each other"),
        (["exchange", "bank"], None, 65533, "puts bank on port 65536, past 65535"),
    ],
    ids=["port-with-two", "port-and-base", "past-65535"],
)
def test_ports_refusals(names: list[str], port: int | None, base: int | None, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        SERVICES.ports(names, port=port, port_base=base)


def test_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="two services are called 'text'"):
        SERVICES.adding(ServiceEntry("text", "socklab.services.text:TextService"))


# -- docs/architecture.md "How to add a service", followed as written ------------------


def doc_code_blocks() -> list[str]:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("### How to add a service", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_a_service_added_as_the_architecture_page_says_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module_code, registry_line = doc_code_blocks()
    # Step 1: the module, as a file of its own (here outside the package, under another name).
    (tmp_path / "doc_echo.py").write_text(module_code, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "doc_echo", raising=False)
    # Step 2: the registry line, as written.
    line = registry_line.strip().rstrip(",").replace("socklab.services.echo:", "doc_echo:")
    entry = eval(line, {"ServiceEntry": ServiceEntry})
    registry: Registry = SERVICES.adding(entry)
    assert registry.names[-1] == "echo" and entry.default_port == 5060
    assert registry.ports(registry.names, port_base=7000)["echo"] == 7004
    options_type = entry.options_type()
    settings = ServeSettings(
        services=("echo", "text"),
        host=HOST,
        ports={"echo": 0, "text": 0},
        limits=Limits(),
        options={"echo": options_type(prefix="> ")},
        registry=registry,
    )

    async def scenario() -> tuple[bytes, dict[str, object], bytes]:
        built = listeners(settings)  # what `socklab serve` runs, built by the registry
        async with asyncio.timeout(WAIT_S):
            for listener in built:
                await listener.start()
        try:
            async with asyncio.timeout(WAIT_S):
                echo, text = built
                reader, writer = await asyncio.open_connection(HOST, echo.port)
                writer.write(b"hello\n" + json.dumps({"text": "hi"}).encode() + b"\n")
                # One connection speaks one dialect: the line dialect here, so the json
                # object is a line too. A second connection speaks json.
                line = await reader.readline()
                await reader.readline()
                writer.close()
                reader2, writer2 = await asyncio.open_connection(HOST, echo.port)
                writer2.write(json.dumps({"op": "echo", "id": 1, "text": "hi"}).encode() + b"\n")
                reply = json.loads(await reader2.readline())
                writer2.close()
                reader3, writer3 = await asyncio.open_connection(HOST, text.port)
                writer3.write(b"Hi\n")
                other = await reader3.readline()
                writer3.close()
                return line, reply, other
        finally:
            async with asyncio.timeout(WAIT_S):
                await asyncio.gather(*(listener.stop() for listener in built))

    line, reply, other = asyncio.run(scenario())
    assert line == b"> hello\n"
    assert reply == {"id": 1, "ok": True, "text": "> hi"}
    assert other == b"[Lower Case] hi [Upper Case] HI\n"
