"""The member's side of auth: who a request comes from, passwords, and the Auth RPCs' entries.

etcd splits auth between the member that receives a request and the log:

- the receiving member resolves the caller (``caller``): a ``token`` (gRPC metadata) or
  ``authorization`` (gateway header) names a user through this member's token table; with
  ``--client-cert-auth`` and no token, the verified client certificate's CommonName is the
  user (gRPC only, as etcd ignores it behind its gateway). An unknown token is "invalid
  auth token";
- it hashes a new password with bcrypt before proposing (the entry carries the hash, never
  the password, so every member stores the same bytes) and checks a password before
  proposing Authenticate (whose entry then carries the simple token's random part);
- the caller travels to the log in the request header: the service sets ``REQUEST_AUTH`` for
  the task serving the call, and ``actors.v3_backend`` copies it into every client entry it
  proposes (so the KV, lease, lock and election services need no auth parameter).

Determinism: salts and token letters come from ``MemberAuth.rng`` (seeded from the member's
id and incarnation; the composition root injects ``random.SystemRandom``), and bcrypt runs
through ``MemberAuth.hasher``: inline by default (the simulator), in a worker thread in
production (``in_thread``), so a hash never blocks the member's Trio loop.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from functools import partial
from random import Random
from typing import TYPE_CHECKING, Final

import bcrypt
import trio

from actors.auth_apply import rpc_error
from actors.auth_tokens import AuthConfig, token_provider
from net.etcdpb import raft_internal_pb2, rpc_pb2
from net.v3 import errors
from net.v3.methods import CallContext
from storage.auth.store import AuthError, AuthInfo, AuthStore

if TYPE_CHECKING:
    from actors.member import Member

REQUEST_AUTH: ContextVar[AuthInfo | None] = ContextVar("troika_request_auth", default=None)
"""The caller of the request the current task serves (set by ``net.v3.auth_service``)."""

TOKEN_KEY: Final = "token"
AUTHORIZATION_KEY: Final = "authorization"
TOKEN_INDEX_POLL_S: Final = 0.01
"""How often a token from an entry not yet applied here is looked at again."""
AUTHENTICATE_ATTEMPTS: Final = 3
"""Authenticate is proposed again when the user's password changed between the check and the
entry (etcd retries whenever the auth revision moved, without bound)."""

_BCRYPT_ALPHABET: Final = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
)
_SALT_BYTES: Final = 16
BCRYPT_PASSWORD_BYTES: Final = 72
"""bcrypt reads at most this much of a password: etcd 3.4's Go bcrypt ignores the rest (a
longer password is accepted, and so is any with the same first 72 bytes); Python's bcrypt
refuses longer ones, so they are cut here."""

Hasher = Callable[[Callable[[], bytes]], Awaitable[bytes]]
"""Runs a CPU-heavy call (bcrypt) and gives its result."""


async def inline(call: Callable[[], bytes]) -> bytes:
    """The simulator's hasher: the call runs in the member's task."""
    return call()


async def in_thread(call: Callable[[], bytes]) -> bytes:
    """Production's hasher: a worker thread, so the Trio loop keeps serving."""
    # nondeterminism-ok: bcrypt's result does not depend on the thread; only production uses it
    return await trio.to_thread.run_sync(call)


def bcrypt_salt(rng: Random, cost: int) -> bytes:
    """A bcrypt salt (``$2a$<cost>$`` and 22 characters) drawn from ``rng``."""
    raw = rng.getrandbits(8 * _SALT_BYTES).to_bytes(_SALT_BYTES, "big")
    encoded = base64.b64encode(raw).rstrip(b"=").translate(_BCRYPT_ALPHABET)
    return b"$2a$%02d$" % cost + encoded


def token_of(context: CallContext) -> str | None:
    """The token a call carries (gRPC ``token``, or the gateway's ``authorization``)."""
    token = context.get(TOKEN_KEY)
    return token if token is not None else context.get(AUTHORIZATION_KEY)


class MemberAuth:
    """One member's auth: its config, random source, hasher and the applied store."""

    def __init__(self, member: Member) -> None:
        self._member = member
        self.config = AuthConfig()
        self.rng = Random(member.member_id * 1_000_003 + member.state.incarnation)
        self.hasher: Hasher = inline
        self.client_cert_auth = False
        self._install_tokens(wall_s=lambda: member.clock.now_ns() / 1e9)

    def configure(
        self,
        config: AuthConfig,
        *,
        rng: Random,
        hasher: Hasher,
        client_cert_auth: bool,
    ) -> None:
        """The composition root's choices (flags, ``SystemRandom``, ``in_thread``)."""
        self.config, self.rng, self.hasher = config, rng, hasher
        self.client_cert_auth = client_cert_auth
        member = self._member
        self._install_tokens(wall_s=lambda: member.clock.now_ns() / 1e9)

    def _install_tokens(self, wall_s: Callable[[], float]) -> None:
        self._member.machine.auth.tokens = token_provider(
            self.config, monotonic_s=trio.current_time, wall_s=wall_s
        )

    @property
    def store(self) -> AuthStore:
        """The applied auth store (read it, never write it)."""
        return self._member.machine.auth.store

    # -- the caller -----------------------------------------------------------------------

    async def caller(self, context: CallContext) -> AuthInfo | None:
        """Who makes the call (None: nobody known).

        Raises:
            RpcError: a token this member does not know ("invalid auth token").
        """
        token = token_of(context)
        if token is None:
            common_name = context.peer_common_name
            if self.client_cert_auth and common_name:
                return AuthInfo(common_name, self.store.revision)
            return None
        await self._wait_for_token_entry(token)
        info = self._member.machine.auth.tokens.info(token, self.store.revision)
        if info is None:
            raise errors.invalid_auth_token()
        return info

    async def _wait_for_token_entry(self, token: str) -> None:
        """A simple token names the index of its entry: wait (bounded) until it is applied
        here, as etcd does, so a token from another member works at once."""
        _, dot, index_text = token.rpartition(".")
        if not dot or not index_text.isdigit() or len(index_text) > 20:
            return
        index = int(index_text)
        with trio.move_on_after(self._member.config.request_timeout_s):
            while self._member.applied_index() < index:
                await trio.sleep(TOKEN_INDEX_POLL_S)

    # -- passwords ------------------------------------------------------------------------

    async def hash_password(self, password: str) -> str:
        """The bcrypt hash of ``password`` at ``--bcrypt-cost``."""
        salt = bcrypt_salt(self.rng, self.config.bcrypt_cost)
        secret = password.encode()[:BCRYPT_PASSWORD_BYTES]
        hashed = await self.hasher(lambda: bcrypt.hashpw(secret, salt))
        return hashed.decode()

    async def authenticate(self, name: str, password: str) -> rpc_pb2.AuthenticateResponse:
        """Check the password here, then propose the token's entry (again if the auth store
        changed meanwhile).

        Raises:
            RpcError: auth not enabled, a wrong user or password, or the member's failures.
        """
        member = self._member
        for _ in range(AUTHENTICATE_ATTEMPTS):
            await member.confirm_read()
            try:
                stored = self.store.password_of(name)
            except AuthError as error:
                raise rpc_error(error) from None
            checked_revision = self.store.revision
            secret = password.encode()[:BCRYPT_PASSWORD_BYTES]
            matched = await self.hasher(partial(_matches, secret, stored))
            if not matched:
                raise errors.auth_failed()
            entry = raft_internal_pb2.InternalRaftRequest(
                authenticate=raft_internal_pb2.InternalAuthenticateRequest(
                    name=name, simple_token=member.machine.auth.tokens.prefix(self.rng)
                )
            )
            response = await member.propose_v3(entry)
            assert isinstance(response, rpc_pb2.AuthenticateResponse), response
            if checked_revision == self.store.revision or self._same_hash(name, stored):
                return response  # the password checked is still the user's
        raise errors.auth_failed()

    def _same_hash(self, name: str, stored: bytes) -> bool:
        user = self.store.user(name)
        return user is not None and not user.options.no_password and user.password == stored


def _matches(password: bytes, stored: bytes) -> bytes:
    """b"1" if ``password`` has the hash ``stored``, else b"" (a hasher's call gives bytes)."""
    try:
        return b"1" if bcrypt.checkpw(password, stored) else b""
    except ValueError:  # a malformed stored hash
        return b""
