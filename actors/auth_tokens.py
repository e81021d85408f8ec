"""Auth tokens as etcd 3.4 issues them: simple tokens (the default) and JWT (``--auth-token``).

A token is made when an Authenticate entry is applied, on every member (``actors.auth_apply``):

- simple: the receiving member draws 16 letters from its seeded generator before proposing,
  the token is ``<letters>.<index of the entry>``, and every member records it with the user
  it names. A simple token lives in memory only: it is forgotten after ``--auth-token-ttl``
  seconds without use (each use restarts the count, on the member's own clock), when its
  user is deleted or changes password, when auth is disabled, and when the member restarts;
  the client then authenticates again (clientv3 does so by itself on "invalid auth token").
  etcd's resolution is one second; here a token is checked for expiry when used.
- JWT: ``jwt,pub-key=FILE,priv-key=FILE,sign-method=RS256,ttl=5m``: a signed token carrying
  ``username``, ``revision`` (the auth revision when issued) and ``exp``; any member with the
  public key verifies it, so it survives restarts and works on every member. Signing and
  ``exp`` need the wall clock, which comes from the member's injected ``Clock``.

The token table is bounded (``SIMPLE_TOKENS_MAX``): when full, the token closest to expiry
is dropped first.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random
from typing import Any, Final, Protocol

from storage.auth.store import AuthInfo

SIMPLE_TOKEN_LETTERS: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
SIMPLE_TOKEN_LENGTH: Final = 16
SIMPLE_TOKEN_TTL_S_DEFAULT: Final = 300
SIMPLE_TOKENS_MAX: Final = 100_000
"""Simple tokens a member remembers at most."""
JWT_TTL_S_DEFAULT: Final = 300
BCRYPT_COST_DEFAULT: Final = 10
BCRYPT_COST_MIN: Final = 4
BCRYPT_COST_MAX: Final = 31
JWT_METHODS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
"""The asymmetric methods etcd 3.4 accepts with a key pair (HMAC methods need no files and
are refused here: ``--auth-token`` names files)."""


class AuthConfigError(ValueError):
    """A malformed ``--auth-token`` (etcd: "auth: invalid auth options")."""


@dataclass(frozen=True, slots=True)
class JwtOptions:
    """``--auth-token jwt,...``: the key files' contents, the method and the TTL."""

    sign_method: str
    private_key: bytes | None
    public_key: bytes
    ttl_s: int = JWT_TTL_S_DEFAULT


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """etcd's auth flags: ``--auth-token`` (parsed), ``--auth-token-ttl``, ``--bcrypt-cost``."""

    jwt: JwtOptions | None = None
    token_ttl_s: int = SIMPLE_TOKEN_TTL_S_DEFAULT
    bcrypt_cost: int = BCRYPT_COST_DEFAULT

    def __post_init__(self) -> None:
        if self.token_ttl_s < 1:
            raise AuthConfigError(f"--auth-token-ttl {self.token_ttl_s} must be positive")
        if not BCRYPT_COST_MIN <= self.bcrypt_cost <= BCRYPT_COST_MAX:
            # etcd falls back to its default for an invalid cost; so here
            object.__setattr__(self, "bcrypt_cost", BCRYPT_COST_DEFAULT)


def _duration_s(text: str) -> int:
    """A Go duration as etcd's ``ttl=`` takes it ("5m", "300s", "1h"), in whole seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    total = 0
    number = ""
    for char in text:
        if char.isdigit():
            number += char
        elif char in units and number:
            total += int(number) * units[char]
            number = ""
        else:
            raise AuthConfigError(f"invalid ttl {text!r}")
    if number or total <= 0:
        raise AuthConfigError(f"invalid ttl {text!r}")
    return total


def parse_auth_token(option: str, *, token_ttl_s: int, bcrypt_cost: int) -> AuthConfig:
    """The config of ``--auth-token`` (``simple``, or ``jwt,pub-key=..,priv-key=..,
    sign-method=..,ttl=..``; key files are read now).

    Raises:
        AuthConfigError: an unknown type, a malformed or repeated option, a missing key or
            method, an unreadable file.
    """
    kind, *pairs = option.split(",")
    options: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or "=" in value or name in options:
            raise AuthConfigError(f"invalid auth options {option!r}")
        options[name] = value
    if kind in ("simple", ""):
        return AuthConfig(token_ttl_s=token_ttl_s, bcrypt_cost=bcrypt_cost)
    if kind != "jwt":
        raise AuthConfigError(f"unknown token type {kind!r}")
    method = options.get("sign-method", "")
    if method not in JWT_METHODS:
        raise AuthConfigError(f"invalid auth signature method {method!r}")
    if "pub-key" not in options:
        raise AuthConfigError("auth: missing key data (pub-key)")
    try:
        public = pathlib.Path(options["pub-key"]).read_bytes()
        private = pathlib.Path(options["priv-key"]).read_bytes() if "priv-key" in options else None
    except OSError as error:
        raise AuthConfigError(f"cannot read a key file: {error}") from None
    ttl_s = _duration_s(options["ttl"]) if "ttl" in options else JWT_TTL_S_DEFAULT
    return AuthConfig(
        jwt=JwtOptions(method, private, public, ttl_s),
        token_ttl_s=token_ttl_s,
        bcrypt_cost=bcrypt_cost,
    )


class TokenProvider(Protocol):
    """What the state machine and the services need of tokens."""

    def prefix(self, rng: Random) -> str:
        """What the receiving member puts in an Authenticate entry before proposing."""
        ...

    def assign(self, username: str, revision: int, prefix: str, index: int) -> str:
        """The token of an applied Authenticate entry (recorded, for a simple token)."""
        ...

    def info(self, token: str, revision: int) -> AuthInfo | None:
        """Who a token names (``revision``: the store's current one), or None if invalid."""
        ...

    def invalidate_user(self, username: str) -> None:
        """Forget the user's tokens (deleted, or a new password)."""
        ...

    def disable(self) -> None:
        """Auth was disabled: forget every token."""
        ...


@dataclass(slots=True)
class SimpleTokens:
    """etcd's simple tokens; see the module docstring.

    Args:
        now_s: the member's clock, in seconds (Trio's clock: virtual under the simulator).
        ttl_s: ``--auth-token-ttl``.
    """

    now_s: Callable[[], float]
    ttl_s: float = SIMPLE_TOKEN_TTL_S_DEFAULT
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)

    def prefix(self, rng: Random) -> str:
        return "".join(rng.choice(SIMPLE_TOKEN_LETTERS) for _ in range(SIMPLE_TOKEN_LENGTH))

    def assign(self, username: str, revision: int, prefix: str, index: int) -> str:
        token = f"{prefix}.{index}"
        if len(self._tokens) >= SIMPLE_TOKENS_MAX:
            self._evict()
        self._tokens[token] = (username, self.now_s() + self.ttl_s)
        return token

    def info(self, token: str, revision: int) -> AuthInfo | None:
        found = self._tokens.get(token)
        if found is None:
            return None
        username, expires_s = found
        now_s = self.now_s()
        if now_s > expires_s:
            del self._tokens[token]
            return None
        self._tokens[token] = (username, now_s + self.ttl_s)
        return AuthInfo(username, revision)

    def invalidate_user(self, username: str) -> None:
        for token in [t for t, (name, _) in self._tokens.items() if name == username]:
            del self._tokens[token]

    def disable(self) -> None:
        self._tokens.clear()

    def _evict(self) -> None:
        now_s = self.now_s()
        for token in [t for t, (_, expires_s) in self._tokens.items() if expires_s < now_s]:
            del self._tokens[token]
        if len(self._tokens) >= SIMPLE_TOKENS_MAX:
            oldest = min(self._tokens, key=lambda t: self._tokens[t][1])
            del self._tokens[oldest]


@dataclass(slots=True)
class JwtTokens:
    """etcd's JWT tokens; see the module docstring.

    Args:
        options: the method, keys and TTL.
        now_s: wall-clock seconds since the epoch (the member's injected ``Clock``).
    """

    options: JwtOptions
    now_s: Callable[[], float]

    def prefix(self, rng: Random) -> str:
        return ""  # etcd's JWT provider proposes no prefix

    def assign(self, username: str, revision: int, prefix: str, index: int) -> str:
        if self.options.private_key is None:
            raise AuthConfigError("auth: token signing attempted with verify-only key")
        claims = {
            "username": username,
            "revision": revision,
            "exp": int(self.now_s()) + self.options.ttl_s,
        }
        import jwt  # noqa: PLC0415 (with cryptography, 11 MiB a member needs only for JWT)

        return jwt.encode(claims, self.options.private_key, algorithm=self.options.sign_method)

    def info(self, token: str, revision: int) -> AuthInfo | None:
        import jwt  # noqa: PLC0415 (see assign)

        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.options.public_key,
                algorithms=[self.options.sign_method],
                options={"verify_exp": False},
            )
        except jwt.PyJWTError:
            return None
        username, issued_at = claims.get("username"), claims.get("revision")
        expires = claims.get("exp")
        if not isinstance(username, str) or type(issued_at) is not int:
            return None
        if not isinstance(expires, int | float) or self.now_s() > expires:
            return None
        return AuthInfo(username, issued_at)

    def invalidate_user(self, username: str) -> None:
        pass  # a JWT stays valid until it expires (as etcd)

    def disable(self) -> None:
        pass


def token_provider(
    config: AuthConfig, *, monotonic_s: Callable[[], float], wall_s: Callable[[], float]
) -> TokenProvider:
    """The provider ``config`` names."""
    if config.jwt is not None:
        return JwtTokens(config.jwt, wall_s)
    return SimpleTokens(monotonic_s, config.token_ttl_s)
