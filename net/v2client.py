"""A small async client for the etcd v2 API, over any Network.

The CLI uses it over TCP, the simulator's workload clients over the
simulated network, and the benchmarks for load. It speaks the v2 keys API as
etcdctl does (values in a form body, flags in the query) and turns etcd's
error JSON into :class:`EtcdError`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from net.http.client import HttpClient
from net.network import Network

FORM_CONTENT_TYPE = ("Content-Type", "application/x-www-form-urlencoded")


class EtcdError(Exception):
    """An error the server answered in etcd's shape.

    Attributes:
        status: the HTTP status.
        code: etcd's errorCode (0 when the body was not etcd's error JSON).
        cause / index: as etcd reports them.
    """

    def __init__(self, status: int, code: int, message: str, cause: str = "", index: int = 0):
        self.status = status
        self.code = code
        self.message = message
        self.cause = cause
        self.index = index
        detail = f" ({cause})" if cause else ""
        super().__init__(f"{code}: {message}{detail} [{index}]" if code else f"{status}: {message}")


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful v2 reply: the JSON body and the index headers."""

    status: int
    body: dict[str, Any]
    etcd_index: int
    raft_index: int
    raft_term: int

    @property
    def node(self) -> dict[str, Any]:
        """The reply's ``node``."""
        node: dict[str, Any] = self.body.get("node", {})
        return node


def _header_int(headers: Any, name: str) -> int:
    value = headers.get(name)
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


class V2Client:
    """Talks to one member's client URL (``http://host:port``)."""

    def __init__(self, network: Network, endpoint: str, *, timeout_s: float = 10.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout_s = timeout_s
        self._http = HttpClient(network, self.endpoint)

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()

    @staticmethod
    def _keys_path(key: str, query: dict[str, str]) -> str:
        path = "/v2/keys/" + quote(key.lstrip("/"), safe="/")
        return path + ("?" + urlencode(query) if query else "")

    async def _keys(
        self, method: str, key: str, query: dict[str, str], form: dict[str, str] | None = None
    ) -> Reply:
        body = urlencode(form).encode() if form else b""
        headers = (FORM_CONTENT_TYPE,) if form else ()
        reply = await self._http.request(
            method, self._keys_path(key, query), headers=headers, body=body, timeout=self.timeout_s
        )
        return self._parse(reply.status, reply.headers, reply.body)

    def _parse(self, status: int, headers: Any, body: bytes) -> Reply:
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            data = {}
        if status >= 300 or not isinstance(data, dict):
            if isinstance(data, dict) and "errorCode" in data:
                raise EtcdError(
                    status,
                    int(data["errorCode"]),
                    str(data.get("message", "")),
                    str(data.get("cause", "")),
                    int(data.get("index", 0)),
                )
            message = data.get("message", body.decode(errors="replace").strip())
            raise EtcdError(status, 0, str(message))
        return Reply(
            status,
            data,
            _header_int(headers, "X-Etcd-Index"),
            _header_int(headers, "X-Raft-Index"),
            _header_int(headers, "X-Raft-Term"),
        )

    # -- keys -------------------------------------------------------------------------

    async def set(
        self,
        key: str,
        value: str,
        *,
        ttl_s: int | None = None,
        prev_value: str | None = None,
        prev_index: int | None = None,
        prev_exist: bool | None = None,
    ) -> Reply:
        """PUT a value (with optional TTL and compare conditions)."""
        form = {"value": value}
        if ttl_s is not None:
            form["ttl"] = str(ttl_s)
        query: dict[str, str] = {}
        if prev_value is not None:
            query["prevValue"] = prev_value
        if prev_index is not None:
            query["prevIndex"] = str(prev_index)
        if prev_exist is not None:
            query["prevExist"] = "true" if prev_exist else "false"
        return await self._keys("PUT", key, query, form)

    async def mkdir(self, key: str) -> Reply:
        """Create a directory."""
        return await self._keys("PUT", key, {"dir": "true", "prevExist": "false"})

    async def append(self, key: str, value: str) -> Reply:
        """POST an in-order key under a directory."""
        return await self._keys("POST", key, {}, {"value": value})

    async def get(
        self, key: str, *, recursive: bool = False, sorted_: bool = False, quorum: bool = False
    ) -> Reply:
        """GET a key or a directory listing."""
        query = {
            "recursive": str(recursive).lower(),
            "sorted": str(sorted_).lower(),
            "quorum": str(quorum).lower(),
        }
        return await self._keys("GET", key, query)

    async def delete(
        self,
        key: str,
        *,
        recursive: bool = False,
        dir_: bool = False,
        prev_value: str | None = None,
        prev_index: int | None = None,
    ) -> Reply:
        """DELETE a key or a directory."""
        query: dict[str, str] = {}
        if recursive:
            query["recursive"] = "true"
        if dir_:
            query["dir"] = "true"
        if prev_value is not None:
            query["prevValue"] = prev_value
        if prev_index is not None:
            query["prevIndex"] = str(prev_index)
        return await self._keys("DELETE", key, query)

    async def watch(
        self, key: str, *, recursive: bool = False, wait_index: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Events at or under ``key`` as they happen (a streaming long poll)."""
        query = {"wait": "true", "stream": "true", "recursive": str(recursive).lower()}
        if wait_index is not None:
            query["waitIndex"] = str(wait_index)
        async with self._http.stream(
            "GET", self._keys_path(key, query), timeout=self.timeout_s
        ) as reply:
            if reply.status >= 300:
                self._parse(reply.status, reply.headers, await reply.read())
            pending = b""
            async for chunk in reply.chunks():
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)

    # -- cluster ------------------------------------------------------------------------

    async def _get_json(self, path: str) -> tuple[int, Any]:
        reply = await self._http.request("GET", path, timeout=self.timeout_s)
        try:
            return reply.status, json.loads(reply.body) if reply.body else None
        except ValueError:
            return reply.status, reply.body.decode(errors="replace")

    async def members(self) -> list[dict[str, Any]]:
        """``/v2/members``."""
        status, data = await self._get_json("/v2/members")
        if status != 200 or not isinstance(data, dict):
            raise EtcdError(status, 0, f"GET /v2/members answered {status}")
        members: list[dict[str, Any]] = data.get("members", [])
        return members

    async def health(self) -> bool:
        """``/health`` says true."""
        status, data = await self._get_json("/health")
        return status == 200 and isinstance(data, dict) and data.get("health") == "true"

    async def version(self) -> dict[str, Any]:
        """``/version``."""
        _, data = await self._get_json("/version")
        return data if isinstance(data, dict) else {}

    async def stats_self(self) -> dict[str, Any]:
        """``/v2/stats/self``."""
        _, data = await self._get_json("/v2/stats/self")
        return data if isinstance(data, dict) else {}

    async def stats_store(self) -> dict[str, Any]:
        """``/v2/stats/store``."""
        _, data = await self._get_json("/v2/stats/store")
        return data if isinstance(data, dict) else {}
