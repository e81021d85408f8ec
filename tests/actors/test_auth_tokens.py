"""``--auth-token``: its parsing, and JWT tokens as etcd 3.4 makes them (claims ``username``,
``revision``, ``exp``; verified with the public key on any member)."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from actors.auth_tokens import (
    BCRYPT_COST_DEFAULT,
    AuthConfigError,
    JwtTokens,
    SimpleTokens,
    parse_auth_token,
    token_provider,
)
from storage.auth.store import AuthInfo


def _keys(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = directory / "priv.pem"
    public = directory / "pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def test_simple_is_the_default_and_a_bad_cost_falls_back_as_etcd() -> None:
    config = parse_auth_token("simple", token_ttl_s=60, bcrypt_cost=99)
    assert config.jwt is None and config.token_ttl_s == 60
    assert config.bcrypt_cost == BCRYPT_COST_DEFAULT
    provider = token_provider(config, monotonic_s=lambda: 0.0, wall_s=lambda: 0.0)
    assert isinstance(provider, SimpleTokens)


@pytest.mark.parametrize(
    "option",
    [
        "oauth",
        "jwt,sign-method=RS256",  # no key
        "jwt,pub-key=/nonexistent,sign-method=ES256",
        "jwt,pub-key=a,pub-key=b,sign-method=ES256",
        "jwt,pub-key=a,sign-method=HS256",
        "jwt,pub-key",
    ],
)
def test_malformed_auth_token_options_are_refused(option: str) -> None:
    with pytest.raises(AuthConfigError):
        parse_auth_token(option, token_ttl_s=300, bcrypt_cost=10)


def test_jwt_tokens_carry_etcds_claims_and_expire(tmp_path: Path) -> None:
    private, public = _keys(tmp_path)
    option = f"jwt,pub-key={public},priv-key={private},sign-method=ES256,ttl=5m"
    config = parse_auth_token(option, token_ttl_s=300, bcrypt_cost=10)
    assert config.jwt is not None and config.jwt.ttl_s == 300
    now = [1_000_000.0]
    signer = token_provider(config, monotonic_s=lambda: 0.0, wall_s=lambda: now[0])
    assert isinstance(signer, JwtTokens)
    token = signer.assign("alice", 7, "", 42)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {"username": "alice", "revision": 7, "exp": 1_000_300}
    verify_only = parse_auth_token(
        f"jwt,pub-key={public},sign-method=ES256", token_ttl_s=300, bcrypt_cost=10
    )
    other_member = token_provider(verify_only, monotonic_s=lambda: 0.0, wall_s=lambda: now[0])
    assert other_member.info(token, 99) == AuthInfo("alice", 7)  # the revision it was issued at
    assert other_member.info(token[:-4] + "AAAA", 99) is None
    now[0] += 301
    assert other_member.info(token, 99) is None
