"""A troika cluster whose members live in network namespaces, so tests can partition them.

Each member runs in its own namespace with one interface (one end of a veth pair, the other
end on a bridge in the root namespace) and its own address, ``10.201.<block>.<i+1>``, where
``block`` is the cluster's port block (claimed machine-wide by ``bench.clusters``, so two
clusters never share a subnet). The bridge has ``.254``: the test process, in the root
namespace, reaches every member's client URL through it, whatever the partition.

A partition is routing inside the namespaces: ``cut(a, b)`` adds a blackhole route to b's
address in a's namespace and to a's in b's, so every packet between them is dropped at its
sender (TCP to a blackhole route gets no answer and no reset; new connections fail) while
both still talk to everyone else and to clients. ``heal()`` removes every such route.
No iptables or nftables is needed (neither is installed here); this needs root and
``ip netns`` (iproute2), and ``available()`` says whether both work.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from bench.clusters import PORT_BLOCK_SIZE, PORT_BLOCKS_FIRST, TroikaCluster
from troika.cluster import PORT_STRIDE

LOOPBACK = "127.0.0.1"
SUBNET_PREFIX = "10.201"
BRIDGE_HOST = 254
COMMAND_TIMEOUT_S = 10.0


def _ip_binary() -> str:
    return shutil.which("ip") or "/usr/sbin/ip"


def available() -> str | None:
    """None if namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not Path(_ip_binary()).exists():
        return "iproute2's ip is not installed"
    probe = f"tkprobe{os.getpid()}"
    try:
        _run("netns", "add", probe)
    except subprocess.CalledProcessError as error:
        return f"ip netns add failed: {error.stderr!r}"
    _run("netns", "del", probe, check=False)
    return None


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_ip_binary(), *args],
        check=check,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


class NetnsTroikaCluster(TroikaCluster):
    """``TroikaCluster`` with a namespace and an address per member, and partitions.

    Args: as ``TroikaCluster``.
    """

    def __init__(
        self, size: int, data_root: Path | str, *, extra_flags: Sequence[str] = ()
    ) -> None:
        super().__init__(size, data_root, extra_flags=extra_flags)
        self._network_tag: str | None = None
        self._cuts: set[tuple[int, int]] = set()
        atexit.register(self._tear_down_network)

    # -- addresses ---------------------------------------------------------------------

    @property
    def _tag(self) -> str:
        """``tk<block>``: names the bridge, veths and namespaces of this cluster."""
        return f"tk{self._block}"

    @property
    def _block(self) -> int:
        return (self.layout.base_port - PORT_BLOCKS_FIRST) // PORT_BLOCK_SIZE

    def address(self, index: int) -> str:
        """Member ``index``'s IPv4 address."""
        return f"{SUBNET_PREFIX}.{self._block}.{index + 1}"

    def namespace(self, index: int) -> str:
        return f"{self._tag}m{index}"

    @property
    def client_urls(self) -> list[str]:
        return [self._moved(self.layout.client_url(i)) for i in range(self.size)]

    @property
    def peer_urls(self) -> list[str]:
        return [self._moved(self.layout.peer_url(i)) for i in range(self.size)]

    def _moved(self, text: str) -> str:
        """``text`` with every member's loopback URL replaced by its own address."""
        for index in range(self.size):
            for port in self._ports_of(index):
                text = text.replace(f"{LOOPBACK}:{port}", f"{self.address(index)}:{port}")
        return text

    def _ports_of(self, index: int) -> tuple[int, int]:
        client = self.layout.base_port + PORT_STRIDE * index
        return client, client + 1

    def member_argv(self, index: int) -> list[str]:
        self._set_up_network()
        argv = [self._moved(item) for item in super().member_argv(index)]
        return [_ip_binary(), "netns", "exec", self.namespace(index), *argv]

    # -- the network -----------------------------------------------------------------

    def _set_up_network(self) -> None:
        if self._network_tag == self._tag:
            return
        self._tear_down_network()
        tag = self._tag
        self._remove_leftovers(tag)
        bridge = f"{tag}br"
        _run("link", "add", bridge, "type", "bridge")
        self._network_tag = tag
        _run("addr", "add", f"{SUBNET_PREFIX}.{self._block}.{BRIDGE_HOST}/24", "dev", bridge)
        _run("link", "set", bridge, "up")
        for index in range(self.size):
            namespace, outside, inside = self.namespace(index), f"{tag}v{index}", f"{tag}n{index}"
            _run("netns", "add", namespace)
            _run("link", "add", outside, "type", "veth", "peer", "name", inside)
            _run("link", "set", inside, "netns", namespace)
            _run("link", "set", outside, "master", bridge, "up")
            _run("-n", namespace, "addr", "add", f"{self.address(index)}/24", "dev", inside)
            _run("-n", namespace, "link", "set", inside, "up")
            _run("-n", namespace, "link", "set", "lo", "up")

    def _remove_leftovers(self, tag: str) -> None:
        """What a run killed before its clean-up left under this tag."""
        for index in range(self.size):
            _run("netns", "del", f"{tag}m{index}", check=False)
            _run("link", "del", f"{tag}v{index}", check=False)
        _run("link", "del", f"{tag}br", check=False)

    def _tear_down_network(self) -> None:
        if self._network_tag is None:
            return
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._remove_leftovers(self._network_tag)
        self._network_tag = None
        self._cuts.clear()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._tear_down_network()

    # -- partitions ------------------------------------------------------------------

    def cut(self, a: int, b: int) -> None:
        """Drop every packet between members ``a`` and ``b``, both ways."""
        for here, there in ((a, b), (b, a)):
            if (here, there) in self._cuts:
                continue
            _run(
                "-n", self.namespace(here), "route", "add", "blackhole", f"{self.address(there)}/32"
            )
            self._cuts.add((here, there))

    def isolate(self, index: int) -> None:
        """Cut member ``index`` from every other member (clients still reach it)."""
        for other in range(self.size):
            if other != index:
                self.cut(index, other)

    def heal(self) -> None:
        """Remove every cut."""
        for here, there in sorted(self._cuts):
            _run(
                "-n", self.namespace(here), "route", "del", "blackhole", f"{self.address(there)}/32"
            )
        self._cuts.clear()

    @property
    def cuts(self) -> frozenset[tuple[int, int]]:
        """The (from, to) pairs whose packets are dropped now."""
        return frozenset(self._cuts)
