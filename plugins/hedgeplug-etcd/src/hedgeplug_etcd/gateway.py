"""A small client for etcd's v3 JSON gateway (the grpc-gateway under /v3/).

It speaks JSON over HTTP with httpx.AsyncClient, so it runs on trio and
asyncio alike, and smooths over the gateway's habits: 64-bit integers travel
as strings, keys and values as base64, and fields holding their default value
(0, false, empty) are left out of answers entirely.

Endpoints are tried in order; a connection that cannot be made moves on to
the next endpoint at once. Any other failure is raised as StoreError naming
the endpoint, and the next call starts at the next endpoint, because a request
that may have reached the server is not repeated behind the caller's back.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx
from hedgeplug.plugin import StoreError

# gRPC status codes the gateway puts in its error bodies.
_UNAUTHENTICATED = 16
_PERMISSION_DENIED = 7
_INVALID_TOKEN_TEXT = "invalid auth token"


def b64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode("ascii")


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def num(body: Mapping[str, Any], key: str) -> int:
    """An integer field: the gateway sends int64 as a string and omits zero."""
    value = body.get(key)
    return int(value) if value not in (None, "") else 0


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes a range request cover every key starting with `prefix`."""
    data = bytearray(prefix)
    while data:
        if data[-1] < 0xFF:
            data[-1] += 1
            return bytes(data)
        data.pop()
    return b"\0"  # every key


class GatewayClient:
    """Unary calls and streams to one etcd cluster through its JSON gateway."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self.username = username
        self.password = password
        self._current = 0
        self._token: str | None = None
        self._http = httpx.AsyncClient(
            verify=ssl_context if ssl_context is not None else True,
            timeout=httpx.Timeout(timeout),
            trust_env=False,  # a proxy from the environment must not sit between us and etcd
        )

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._current]

    def _advance(self) -> None:
        self._current = (self._current + 1) % len(self.endpoints)

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------ unary

    async def call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST `body` to /v3/`path`; the decoded answer, or StoreError."""
        failures: list[str] = []
        for _ in range(len(self.endpoints)):
            endpoint = self.endpoint
            try:
                return await self._call_at(endpoint, path, body)
            except httpx.ConnectError as exc:
                failures.append(f"{endpoint}: cannot connect ({_reason(exc)})")
                self._advance()
                self._token = None  # tokens are per member; get a new one there
            except httpx.TimeoutException as exc:
                self._advance()
                raise StoreError(f"etcd {endpoint}: no answer within {self.timeout:g}s "
                                 f"to /v3/{path} ({type(exc).__name__})") from exc
            except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
                # (on asyncio a TLS alert from the server can surface as a bare SSLError)
                self._advance()
                raise StoreError(f"etcd {endpoint}: /v3/{path} failed: {_reason(exc)}") from exc
        raise StoreError("etcd: no endpoint could be reached: " + "; ".join(failures))

    async def _call_at(self, endpoint: str, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        for attempt in range(2):
            headers = await self._auth_headers(endpoint)
            response = await self._http.post(f"{endpoint}/v3/{path}", json=body, headers=headers)
            answer = _decode(endpoint, path, response)
            if response.status_code == 200:
                return answer
            if attempt == 0 and self.username and _token_expired(answer):
                self._token = None  # the token expired or the member restarted: log in again
                continue
            raise _store_error(endpoint, path, response.status_code, answer)
        raise AssertionError("unreachable")

    async def _auth_headers(self, endpoint: str) -> dict[str, str]:
        if not self.username:
            return {}
        if self._token is None:
            response = await self._http.post(
                f"{endpoint}/v3/auth/authenticate",
                json={"name": self.username, "password": self.password or ""},
            )
            answer = _decode(endpoint, "auth/authenticate", response)
            if response.status_code != 200 or not answer.get("token"):
                raise StoreError(
                    f"etcd {endpoint}: login as user {self.username!r} failed: "
                    f"{answer.get('message') or answer.get('error') or response.status_code}"
                )
            self._token = str(answer["token"])
        # etcd's gateway takes the bare token, without a "Bearer" scheme.
        return {"Authorization": self._token}

    # ------------------------------------------------------------ streams

    async def stream(self, path: str, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST `body` to a streaming /v3/`path` and yield each `result` as it arrives."""
        endpoint = self.endpoint
        try:
            headers = await self._auth_headers(endpoint)
            async with self._http.stream(
                "POST", f"{endpoint}/v3/{path}", json=body, headers=headers,
                timeout=httpx.Timeout(self.timeout, read=None),  # a quiet watch is normal
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    answer = _decode(endpoint, path, response)
                    if _token_expired(answer):
                        self._token = None
                    raise _store_error(endpoint, path, response.status_code, answer)
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        message = json.loads(line)
                    except ValueError as exc:
                        raise StoreError(f"etcd {endpoint}: /v3/{path} sent a line that is not "
                                         f"JSON: {line[:200]!r}") from exc
                    if "error" in message:
                        error = message["error"]
                        raise StoreError(f"etcd {endpoint}: /v3/{path} stream failed: "
                                         f"{error.get('message', error)}")
                    yield message.get("result", {})
        except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
            self._advance()
            raise StoreError(f"etcd {endpoint}: /v3/{path} stream failed: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _decode(endpoint: str, path: str, response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        raise StoreError(
            f"etcd {endpoint}: /v3/{path} answered HTTP {response.status_code} with a body "
            f"that is not JSON ({response.text[:200]!r}); is this an etcd v3 client URL?"
        ) from None
    if not isinstance(answer, dict):
        raise StoreError(f"etcd {endpoint}: /v3/{path} answered {answer!r}, expected an object")
    return answer


def _token_expired(answer: Mapping[str, Any]) -> bool:
    return num(answer, "code") == _UNAUTHENTICATED or _INVALID_TOKEN_TEXT in str(
        answer.get("message", "")
    )


def _store_error(endpoint: str, path: str, status: int, answer: Mapping[str, Any]) -> StoreError:
    message = str(answer.get("message") or answer.get("error") or f"HTTP {status}")
    if num(answer, "code") == _PERMISSION_DENIED:
        message += " (the etcd user needs read and write permission on the key prefix)"
    elif "user name is empty" in message:
        message += " (etcd has authentication enabled: set username and password)"
    elif status == 404:
        message += " (is this an etcd v3 client URL?)"
    return StoreError(f"etcd {endpoint}: /v3/{path}: {message}")
