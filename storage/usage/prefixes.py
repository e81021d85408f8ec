"""How a key is cut into prefixes, by depth.

A key's prefix at depth ``N`` is the key up to and including its ``N``-th ``/``, not
counting a leading ``/``: ``/registry/pods/ns/name`` is ``/registry/`` at depth 1,
``/registry/pods/`` at depth 2, ``/registry/pods/ns/`` at depth 3. A key with fewer
separators is its own prefix at every deeper depth, and depth 0 is the key itself. Keys
sharing a prefix are contiguous in key order, which the storage scan relies on.
"""

from __future__ import annotations

from typing import Final

SEPARATOR: Final = 0x2F  # "/"


def prefix_at_depth(key: bytes, depth: int) -> bytes:
    """``key``'s prefix at ``depth`` (0: the whole key)."""
    assert depth >= 0, depth
    if depth == 0:
        return key
    position = 1 if key[:1] == b"/" else 0
    for _ in range(depth):
        found = key.find(b"/", position)
        if found < 0:
            return key
        position = found + 1
    return key[:position]


def prefix_depth(prefix: bytes) -> int:
    """The depth whose prefixes ``prefix`` is one of, or lies within: its separators, a
    leading one not counted (``/a/b/`` is 2, ``/a/b`` is 2: the prefixes at depth 2 below it
    start with it)."""
    body = prefix[1:] if prefix[:1] == b"/" else prefix
    return body.count(b"/") + (0 if not body or body.endswith(b"/") else 1)


def prefixes(key: bytes, depth_max: int) -> list[bytes]:
    """``[key, prefix at 1, ..., prefix at depth_max]``: one scan of the key for all depths."""
    out = [key]
    position = 1 if key[:1] == b"/" else 0
    for _ in range(depth_max):
        found = key.find(b"/", position)
        if found < 0:
            out.append(key)
            continue
        position = found + 1
        out.append(key[:position])
    return out


def prefix_end(prefix: bytes) -> bytes | None:
    """The first key after every key that starts with ``prefix`` (None: no bound)."""
    for index in range(len(prefix) - 1, -1, -1):
        if prefix[index] < 0xFF:
            return prefix[:index] + bytes([prefix[index] + 1])
    return None
