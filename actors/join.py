"""A member about to join an existing cluster learns the cluster id from its peers.

The handshake of every peer connection names the cluster, so a new member
must know the id before it can talk to anyone; it asks the founders it was
told about (``--initial-cluster``) with the peer transport's info exchange,
and takes the first answer that lists it as a member.
"""

from __future__ import annotations

import logging

import trio

from actors.bootstrap import BootstrapError, Identity, MemberConfig
from actors.membership import Member, Membership
from net.errors import FrameError, HandshakeRefused
from net.network import ConnectionRefused, Network, address_from_url
from net.peers import fetch_cluster_info

log = logging.getLogger(__name__)

JOIN_ATTEMPTS_MAX = 30
JOIN_RETRY_S = 1.0


def cluster_info(membership: Membership) -> dict[str, object]:
    """What a member tells one about to join."""
    return {"members": [member.to_plain() for member in membership.sorted_members()]}


async def fetch_join_identity(network: Network, config: MemberConfig) -> Identity:
    """This member's id and its cluster's, as the member that added it recorded them.

    Raises:
        BootstrapError: no peer answered, or none lists our peer URLs as a member.
    """
    own_urls = set(config.advertise_peer_urls)
    peers = [
        address_from_url(url)
        for name, urls in sorted(config.initial_cluster.items())
        if name != config.name
        for url in urls
    ]
    for _ in range(JOIN_ATTEMPTS_MAX):
        for address in peers:
            try:
                cluster_id, info = await fetch_cluster_info(network, address)
            except (
                ConnectionRefused,
                HandshakeRefused,
                FrameError,
                trio.TooSlowError,
                OSError,
            ) as error:
                log.info("no cluster info from %s: %s", address, error)
                continue
            members = [Member.from_plain(item) for item in info.get("members", [])]
            for member in members:
                if own_urls & set(member.peer_urls):
                    return Identity(member.member_id, cluster_id)
            log.warning("%s does not list %s as a member yet", address, sorted(own_urls))
        await trio.sleep(JOIN_RETRY_S)
    raise BootstrapError(
        "no peer of --initial-cluster lists this member: add it first (member add), "
        "then start it with --initial-cluster-state existing"
    )


async def fetch_peer_addresses(
    network: Network, config: MemberConfig, member_id: int
) -> dict[int, str]:
    """Every other member's peer address, as the first founder that answers lists them; empty
    if none answers.

    A member that joins starts with an empty member table (it learns the real one from the
    leader's snapshot), so its transport knows no peer and could not answer the leader's
    first appends: it would never get that snapshot. These addresses tide it over until then.
    """
    for name, urls in sorted(config.initial_cluster.items()):
        if name == config.name:
            continue
        for url in urls:
            try:
                _, info = await fetch_cluster_info(network, address_from_url(url))
            except (ConnectionRefused, HandshakeRefused, FrameError, trio.TooSlowError, OSError):
                continue
            members = [Member.from_plain(item) for item in info.get("members", [])]
            addresses = {
                member.member_id: address_from_url(member.peer_urls[0])
                for member in members
                if member.member_id != member_id and member.peer_urls
            }
            if addresses:
                return addresses
    return {}
