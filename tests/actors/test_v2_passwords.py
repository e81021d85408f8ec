"""``MemberPasswords``: v2 auth's bcrypt with the member's seeded salts, through its hasher."""

from __future__ import annotations

from collections.abc import Callable
from random import Random
from types import SimpleNamespace
from typing import Any

import bcrypt

from actors.api_backend import V2_BCRYPT_COST, MemberPasswords


def member(seed: int, calls: list[str]) -> Any:
    async def hasher(call: Callable[[], bytes]) -> bytes:
        calls.append("hashed")
        return call()

    return SimpleNamespace(auth=SimpleNamespace(rng=Random(seed), hasher=hasher))


async def test_hashes_are_etcds_bcrypt_with_salts_from_the_members_random_source() -> None:
    calls: list[str] = []
    first = await MemberPasswords(member(7, calls)).hash("pw")
    again = await MemberPasswords(member(7, calls)).hash("pw")
    other = await MemberPasswords(member(8, calls)).hash("pw")
    assert first == again != other  # the salt comes from the seeded source, nothing else
    assert first.startswith(f"$2a${V2_BCRYPT_COST:02d}$")
    assert bcrypt.checkpw(b"pw", first.encode())
    passwords = MemberPasswords(member(7, calls))
    assert await passwords.check(first, "pw")
    assert not await passwords.check(first, "wrong")
    assert not await passwords.check("not a hash", "pw")
    assert calls == ["hashed"] * 6  # every hash and check went through the hasher
    # Go's bcrypt reads 72 bytes of a password (Python's refuses more): cut, as etcd does
    long = await passwords.hash("a" * 72 + "tail")
    assert await passwords.check(long, "a" * 72 + "other tail")
    assert not await passwords.check(long, "a" * 71)
