"""``troika snapshot save|restore|status``: a backup of a member, and a new cluster from it.

``save`` does what ``etcdctl snapshot save`` does (Maintenance.Snapshot from one endpoint into
``FILE.part``, renamed once complete), and checks the trailing SHA-256 itself (etcdctl only
checks that one is there).

A backup is what ``etcdctl snapshot save`` (or any client of Maintenance.Snapshot) wrote from a
troika member: ``storage.snapshot_file``'s format, its SHA-256 at the end. Restore follows
etcd's semantics (``clientv3/snapshot``'s ``Restore``):

- the digest is checked first (``--skip-hash-check`` is etcd's escape for a file copied out of
  a data directory; a troika file always carries its digest, so there is no such flag here);
- the data directory must not exist yet;
- the members are the ones the flags name (``--initial-cluster``, ``--initial-cluster-token``),
  with etcd's ids, so the cluster id is new unless the flags are the old cluster's own; the
  state is the MVCC store and the leases as of the snapshot (revisions kept); v2 data is not
  restored, as etcd restores none;
- every member of the new cluster is restored from the same file with the same flags and its
  own ``--name``, then started with ``troika serve`` and ``--initial-cluster-state new``.

What is written is exactly what a founder writes at its first start (``actors.bootstrap``),
except that the founding snapshot holds the backup's records besides the member table: the
member's identity, a snapshot at index 1 of term 1 with every member a voter, a hard state
that commits it. ``troika serve`` installs that snapshot when it starts.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import trio
import typer

from actors.bootstrap import BOOTSTRAP_INDEX, IDENTITY_KEY, Identity, MemberConfig
from actors.membership import Member, Membership, cluster_id_for, parse_initial_cluster
from actors.state_machine import SNAPSHOT_MEMBERS_KEY, chunk_records
from net.etcdpb import rpc_pb2
from net.etcdpb.routes import grpc_path
from net.v3.client import V3Client
from storage.kv import RocksKeyValueStore, WriteBatch
from storage.raft_store import HardStateRecord, RaftStore, SnapshotRecord, encode_snapshot_chunk
from storage.snapshot_file import (
    DIGEST_BYTES,
    SnapshotFile,
    SnapshotFileError,
    read_snapshot,
)
from troika.ctl import EXIT_ERROR, CtlError, GlobalOptions, ctl_command, run_client

SNAPSHOT_PATH = grpc_path("Maintenance", "Snapshot")
SAVE_TIMEOUT_S = 300.0
"""The bound on one ``snapshot save`` (a large store streams for a while)."""
RESTORE_TERM = 1
"""The term of the founding snapshot (a founder's, as ``actors.bootstrap`` writes it)."""


class RestoreError(Exception):
    """The restore cannot be done with these flags and this file (the message says why)."""


def restored_members(
    name: str, initial_cluster: str, token: str, advertise_peer_urls: list[str]
) -> tuple[list[Member], Member]:
    """The new cluster's members (etcd's ids from the flags) and the one being restored.

    Raises:
        RestoreError: the cluster does not name ``name``, or names it with other peer URLs
            than ``--initial-advertise-peer-urls``.
    """
    try:
        cluster = parse_initial_cluster(initial_cluster)
        config = MemberConfig(name=name, initial_cluster=cluster, initial_cluster_token=token)
    except ValueError as error:
        raise RestoreError(str(error)) from None
    if advertise_peer_urls and sorted(cluster[name]) != sorted(advertise_peer_urls):
        raise RestoreError(
            f"--initial-cluster has {name}={','.join(cluster[name])} but "
            f"--initial-advertise-peer-urls is {','.join(advertise_peer_urls)}"
        )
    members = config.founding_members()
    return members, next(member for member in members if member.name == name)


def founding_chunks(snapshot: SnapshotFile, members: list[Member]) -> list[bytes]:
    """The founding snapshot's chunks: the backup's records, then the member table (in the
    key order the state machine's chunks keep)."""
    membership = Membership({member.member_id: member for member in members})
    records = [*snapshot.records, (SNAPSHOT_MEMBERS_KEY, membership.encode())]
    records.sort(key=lambda record: record[0])
    return list(chunk_records(records))


async def restore_data_dir(
    snapshot: SnapshotFile, data_dir: Path, members: list[Member], member: Member
) -> Identity:
    """Write a founder's data directory holding ``snapshot``'s state.

    Raises:
        RestoreError: the data directory exists.
    """
    if data_dir.exists():
        raise RestoreError(f"data-dir {str(data_dir)!r} exists")
    data_dir.mkdir(parents=True)
    identity = Identity(member.member_id, cluster_id_for([m.member_id for m in members]))
    kv = RocksKeyValueStore(data_dir / "db")
    try:
        raft_store = RaftStore.open(kv)
        bodies = founding_chunks(snapshot, members)
        size_bytes = 0
        for seq, body in enumerate(bodies):
            value = encode_snapshot_chunk(BOOTSTRAP_INDEX, seq, body)
            raft_store.put_snapshot_chunk(BOOTSTRAP_INDEX, True, seq, value)
            size_bytes += len(value)
        voters = tuple(sorted(m.member_id for m in members))
        record = SnapshotRecord(
            BOOTSTRAP_INDEX, RESTORE_TERM, voters, (), b"", len(bodies), size_bytes, True
        )
        hard_state = HardStateRecord(term=RESTORE_TERM, vote=0, commit=BOOTSTRAP_INDEX)
        await raft_store.save(hard_state, [], record, sync=True)
        batch = WriteBatch()
        batch.put(IDENTITY_KEY, identity.encode())
        await kv.write(batch, sync=True)
    finally:
        kv.close()
    return identity


def status_fields(snapshot: SnapshotFile) -> dict[str, int]:
    """``etcdctl snapshot status``'s fields (hash: the first four bytes of the digest, as a
    number; etcd's is a CRC of the database, which a troika file does not have; total keys:
    the records, as etcd counts every key of every bucket)."""
    return {
        "hash": int.from_bytes(snapshot.digest[:4], "big"),
        "revision": snapshot.header.revision,
        "totalKey": len(snapshot.records),
        "totalSize": snapshot.size_bytes,
    }


async def fetch_snapshot(client: V3Client, path: Path) -> int:
    """Stream Maintenance.Snapshot from the client's endpoint into ``path`` (through
    ``path.part``, fsynced, then renamed); its size in bytes.

    Raises:
        RpcError: the server's error, or none could be reached.
        SnapshotFileError: the stream does not end with the SHA-256 of what came before.
    """
    partial = path.with_name(path.name + ".part")
    digest = hashlib.sha256()
    pieces: list[bytes] = []
    with trio.fail_after(SAVE_TIMEOUT_S):
        async with client.stream(SNAPSHOT_PATH, rpc_pb2.SnapshotResponse) as call:
            await call.send(rpc_pb2.SnapshotRequest())
            await call.done_writing()
            async for response in call:
                pieces.append(response.blob)
    data = b"".join(pieces)
    body, trailer = data[:-DIGEST_BYTES], data[-DIGEST_BYTES:]
    digest.update(body)
    if len(data) < DIGEST_BYTES or digest.digest() != trailer:
        raise SnapshotFileError(f"sha256 checksum not found or wrong [bytes: {len(data)}]")
    with partial.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    partial.rename(path)
    return len(data)


def _read(path: Path) -> SnapshotFile:
    try:
        return read_snapshot(path)
    except (SnapshotFileError, OSError) as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(1) from None


snapshot_app = typer.Typer(help="Manages troika node snapshots", no_args_is_help=True)


def save_command(
    options: GlobalOptions,
    *,
    file: Annotated[Path, typer.Argument(help="where to write the snapshot")],
) -> None:
    """Stores a snapshot of a member's v3 state to a given file (from the one endpoint
    given; etcdctl's global flags, TLS and user included)."""
    chosen = [part.strip() for part in options.endpoints.split(",") if part.strip()]
    if len(chosen) != 1:
        raise CtlError(
            EXIT_ERROR, f"snapshot must be requested to one selected node, not multiple {chosen}"
        )
    try:
        size = run_client(
            replace(options, command_timeout=f"{SAVE_TIMEOUT_S}s"),
            lambda client: fetch_snapshot(client, file),
        )
    except (SnapshotFileError, OSError, trio.TooSlowError) as error:
        raise CtlError(EXIT_ERROR, str(error)) from None
    typer.echo(f"Snapshot saved at {file} ({size} bytes)")


@snapshot_app.command("restore")
def restore_command(  # noqa: PLR0917 (Typer takes every flag as a parameter)
    file: Annotated[Path, typer.Argument(help="the snapshot file")],
    data_dir: Annotated[str, typer.Option("--data-dir", help="the new data directory")] = "",
    name: Annotated[str, typer.Option("--name", help="this member's name")] = "default",
    initial_cluster: Annotated[
        str, typer.Option("--initial-cluster", help="the new cluster's members, name=peer-url")
    ] = "default=http://localhost:2380",
    initial_cluster_token: Annotated[
        str, typer.Option("--initial-cluster-token", help="the new cluster's token")
    ] = "etcd-cluster",
    initial_advertise_peer_urls: Annotated[
        str, typer.Option("--initial-advertise-peer-urls", help="this member's peer URLs")
    ] = "http://localhost:2380",
) -> None:
    """Restores a troika member snapshot to a troika data directory (etcdctl's flags)."""
    snapshot = _read(file)
    directory = Path(data_dir or f"{name}.etcd")
    advertise = [url for url in initial_advertise_peer_urls.split(",") if url]
    try:
        members, member = restored_members(name, initial_cluster, initial_cluster_token, advertise)
        identity = trio.run(restore_data_dir, snapshot, directory, members, member)
    except RestoreError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"restored snapshot (revision {snapshot.header.revision}, "
        f"{len(snapshot.records)} records) to {directory} as member {identity.member_id:x} "
        f"of cluster {identity.cluster_id:x}"
    )


@snapshot_app.command("status")
def status_command(
    file: Annotated[Path, typer.Argument(help="the snapshot file")],
    write_out: Annotated[str, typer.Option("-w", "--write-out", help="simple, table or json")] = (
        "simple"
    ),
) -> None:
    """Gets backend snapshot status of a given file."""
    fields = status_fields(_read(file))
    if write_out == "json":
        typer.echo(json.dumps(fields, separators=(",", ":")))
    elif write_out == "table":
        typer.echo("| HASH | REVISION | TOTAL KEYS | TOTAL SIZE |")
        typer.echo("| {hash:x} | {revision} | {totalKey} | {totalSize} |".format(**fields))
    else:
        typer.echo("{hash:x}, {revision}, {totalKey}, {totalSize}".format(**fields))


def register(app: typer.Typer) -> None:
    """Add ``snapshot save``, ``snapshot restore`` and ``snapshot status`` to ``app``."""
    ctl_command(snapshot_app, "save")(save_command)
    app.add_typer(snapshot_app, name="snapshot")


__all__ = ["RestoreError", "founding_chunks", "register", "restore_data_dir", "restored_members"]
