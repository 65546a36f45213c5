"""The json dialect's envelope, the same for every service.

A request is an object with ``"op"``, an optional ``"id"`` and the op's fields. A reply
echoes the id and says ``"ok"``:

    {"id": 7, "op": "convert", "text": "hi"}
    {"id": 7, "ok": true, "lower": "hi", "upper": "HI"}
    {"id": 7, "ok": false, "error": {"code": "bad_request", "message": "..."}}

An error may carry ``"replayed": true`` inside ``error``: the bank answered a retried
request with the refusal it stored the first time.

An id is an integer or a string of at most ``MAX_ID_CHARS`` characters, so that every
reply can echo it as valid JSON. Server, clients and the load generator build and read
envelopes only through this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

from socklab.errors import PeerProtocolError, RequestRejected, rejection_from_wire

MAX_ID_CHARS = 128

RequestId: TypeAlias = int | str | None
"""``None``: the request had no id, and its reply carries none."""


def check_request_id(value: object) -> RequestId:
    """Return a request's ``id`` if it may be echoed. Raises ``PeerProtocolError``
    (``bad_request``) for anything but an integer or a short string."""
    if value is None or (type(value) is int) or (type(value) is str and len(value) <= MAX_ID_CHARS):
        return value
    raise PeerProtocolError(
        "bad_request", f"an id is a string of at most {MAX_ID_CHARS} characters or an integer"
    )


def request(op: str, request_id: RequestId, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The request object for ``op`` with ``fields``."""
    message: dict[str, Any] = {"op": op}
    if request_id is not None:
        message["id"] = request_id
    message.update(fields)
    return message


def ok_reply(request_id: RequestId, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A successful reply carrying ``fields``."""
    reply: dict[str, Any] = (
        {"id": request_id, "ok": True} if request_id is not None else {"ok": True}
    )
    reply.update(fields)
    return reply


def error_reply(
    request_id: RequestId, code: str, message: str, *, replayed: bool = False
) -> dict[str, Any]:
    """An error reply with a stable ``code`` and a ``message`` for people."""
    error: dict[str, Any] = {"code": code, "message": message}
    if replayed:
        error["replayed"] = True
    reply: dict[str, Any] = {"ok": False, "error": error}
    return {"id": request_id, **reply} if request_id is not None else reply


def rejection_reply(request_id: RequestId, exc: RequestRejected) -> dict[str, Any]:
    """The error reply that says ``exc``."""
    return error_reply(request_id, exc.code, exc.message, replayed=exc.replayed)


def unwrap(reply: Mapping[str, Any], request_id: RequestId, address: str) -> dict[str, Any]:
    """The fields of a successful reply to ``request_id``.

    Raises the ``RequestRejected`` subclass an error reply names (with ``replayed`` set as
    the reply says), or ``PeerProtocolError`` (``bad_reply``) for a reply to another
    request or one that is not an envelope.
    """
    if reply.get("id") != request_id:
        raise PeerProtocolError(
            "bad_reply",
            f"the server at {address} answered request {reply.get('id')!r}, not {request_id!r}",
        )
    ok = reply.get("ok")
    if ok is True:
        return {k: v for k, v in reply.items() if k not in ("id", "ok")}
    error = reply.get("error")
    if ok is False and isinstance(error, Mapping):
        code, message = error.get("code"), error.get("message")
        if isinstance(code, str) and isinstance(message, str):
            exc = rejection_from_wire(code, message)
            exc.replayed = error.get("replayed") is True
            raise exc
    raise PeerProtocolError(
        "bad_reply", f"the server at {address} sent a reply that is not a json envelope"
    )


ERROR_MARK = b'"ok":false'
"""How an error reply reads in socklab's compact encoding: the load generator's quick test
for telling an error reply from a wrong one."""


def id_prefix(request_id: int) -> bytes:
    """``{"id":N,`` — the load generator's requests are this followed by a pre-encoded
    body (the object's members after the opening brace), so each costs no encoding."""
    return b'{"id":%d,' % request_id
