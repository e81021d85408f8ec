"""Scenario scripts for the Raft core, in the spirit of etcd's raft testdata.

A script is a text file of blocks::

    # comments and blank lines between blocks are kept
    command arg key=value
    ----
    expected output

Each command drives a :class:`sim.raft_cluster.RaftCluster`; its output is
compared with the expectation. Run pytest with ``--rewrite`` (or set
``TROIKA_REWRITE=1``) to write the actual output back after a deliberate
change, then read the diff.

Commands (ids are member ids; lists like ``voters=(1,2,3)``):

- ``add-nodes N [voters=(..)] [learners=(..)] [index=I] [prevote=b] [checkquorum=b]
  [read-only=safe|lease-based] [election=T] [heartbeat=T] [append-bytes-max=B]
  [inflight-max=M] [uncommitted-bytes-max=B] [max-committed-bytes=B] [bug=NAME]``:
  create the cluster (or add N empty members to it)
- ``campaign ID``, ``propose ID DATA``
- ``propose-conf-change ID add-voter=N`` (or ``add-learner=N``, ``remove=N``)
- ``read-index ID CONTEXT``, ``transfer-leader FROM TO``, ``report-unreachable ID PEER``
- ``tick ID [N]``, ``tick-election ID``, ``tick-heartbeat ID``, ``tick-all [N]``
- ``process-ready ID..``, ``deliver-msgs [ID..] [drop=(..)] [type=Name]``, ``drop-msgs [ID..]``
- ``stabilize [ID..]``: process Readies and deliver messages until nothing moves
- ``partition (..) (..)``, ``isolate ID``, ``heal``, ``crash ID``, ``restart ID``
- ``compact ID``: snapshot the applied state and compact the log to it
- ``raft-log ID``, ``raft-state``, ``status ID``, ``applied ID``
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

from actors.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    Entry,
    EntryType,
    Message,
    MessageType,
    PlantedBug,
    ProposalDropped,
    RaftError,
    ReadOnlyOption,
    Ready,
)
from sim.raft_cluster import RaftCluster

MESSAGE_NAMES = {
    MessageType.HUP: "MsgHup",
    MessageType.BEAT: "MsgBeat",
    MessageType.PROPOSE: "MsgProp",
    MessageType.APPEND: "MsgApp",
    MessageType.APPEND_RESPONSE: "MsgAppResp",
    MessageType.VOTE: "MsgVote",
    MessageType.VOTE_RESPONSE: "MsgVoteResp",
    MessageType.SNAPSHOT: "MsgSnap",
    MessageType.HEARTBEAT: "MsgHeartbeat",
    MessageType.HEARTBEAT_RESPONSE: "MsgHeartbeatResp",
    MessageType.UNREACHABLE: "MsgUnreachable",
    MessageType.SNAPSHOT_STATUS: "MsgSnapStatus",
    MessageType.CHECK_QUORUM: "MsgCheckQuorum",
    MessageType.TRANSFER_LEADER: "MsgTransferLeader",
    MessageType.TIMEOUT_NOW: "MsgTimeoutNow",
    MessageType.READ_INDEX: "MsgReadIndex",
    MessageType.READ_INDEX_RESPONSE: "MsgReadIndexResp",
    MessageType.PRE_VOTE: "MsgPreVote",
    MessageType.PRE_VOTE_RESPONSE: "MsgPreVoteResp",
}
TYPES_BY_NAME = {name: kind for kind, name in MESSAGE_NAMES.items()}


# -- rendering --------------------------------------------------------------------


def render_entry(entry: Entry) -> str:
    """``term/index`` and the payload: one deterministic token."""
    text = f"{entry.term}/{entry.index}"
    if entry.type is EntryType.CONF_CHANGE:
        change = ConfChange.decode(entry.data)
        kind = change.type.name.lower().replace("_", "-")
        return f"{text} ConfChange({kind} {change.node_id})"
    if entry.data:
        return f"{text} {entry.data.decode('utf-8', 'backslashreplace')}"
    return f"{text} <empty>"


def render_message(message: Message) -> str:
    """One line per message, like ``1->2 MsgApp Term:1 Log:1/2 Commit:2 Entries:[1/3 x]``."""
    parts = [f"{message.sender}->{message.recipient} {MESSAGE_NAMES[message.type]}"]
    parts.append(f"Term:{message.term} Log:{message.log_term}/{message.index}")
    if message.commit:
        parts.append(f"Commit:{message.commit}")
    if message.entries:
        parts.append("Entries:[" + ", ".join(render_entry(e) for e in message.entries) + "]")
    if message.reject:
        parts.append(f"Rejected (Hint: {message.reject_hint})")
    if message.context:
        parts.append(f"Context:{message.context.decode('utf-8', 'backslashreplace')}")
    if message.snapshot is not None:
        meta = message.snapshot.metadata
        voters = ",".join(map(str, meta.conf_state.voters))
        learners = ",".join(map(str, meta.conf_state.learners))
        parts.append(f"Snapshot: Index:{meta.index} Term:{meta.term} Voters:({voters})")
        if learners:
            parts.append(f"Learners:({learners})")
    return " ".join(parts)


def render_ready(ready: Ready) -> list[str]:
    """The parts of a Ready that are set, one item per line."""
    lines: list[str] = []
    if ready.soft_state is not None:
        soft = ready.soft_state
        lines.append(f"Lead:{soft.leader_id} State:{soft.role.value}")
    if ready.hard_state is not None:
        hard = ready.hard_state
        lines.append(f"HardState Term:{hard.term} Vote:{hard.vote} Commit:{hard.commit}")
    if ready.snapshot is not None:
        meta = ready.snapshot.metadata
        lines.append(f"Snapshot Index:{meta.index} Term:{meta.term}")
    if ready.entries:
        lines.append("Entries:")
        lines.extend(render_entry(e) for e in ready.entries)
    if ready.messages:
        lines.append("Messages:")
        lines.extend(render_message(m) for m in ready.messages)
    if ready.messages_after_persist:
        lines.append("Messages after persist:")
        lines.extend(render_message(m) for m in ready.messages_after_persist)
    if ready.committed_entries:
        lines.append("CommittedEntries:")
        lines.extend(render_entry(e) for e in ready.committed_entries)
    if ready.read_states:
        lines.append("ReadStates:")
        lines.extend(
            f"Index:{rs.index} Context:{rs.request_context.decode()}" for rs in ready.read_states
        )
    return lines


# -- parsing --------------------------------------------------------------------


@dataclass
class Block:
    """One command and its expected output, with the comment lines before it."""

    preamble: list[str]
    command: str
    expected: list[str]
    line_number: int


def parse_script(text: str) -> tuple[list[Block], list[str]]:
    """Split a script into blocks; also return the trailing comment lines."""
    blocks: list[Block] = []
    preamble: list[str] = []
    lines = text.splitlines()
    position = 0
    while position < len(lines):
        line = lines[position]
        if not line.strip() or line.lstrip().startswith("#"):
            preamble.append(line)
            position += 1
            continue
        command_line = position
        if position + 1 >= len(lines) or lines[position + 1] != "----":
            raise ValueError(f"line {position + 1}: command {line!r} is not followed by ----")
        position += 2
        expected: list[str] = []
        while position < len(lines) and lines[position].strip():
            expected.append(lines[position])
            position += 1
        blocks.append(Block(preamble, line, expected, command_line + 1))
        preamble = []
    return blocks, preamble


def render_script(blocks: list[Block], outputs: list[list[str]], trailer: list[str]) -> str:
    """A script with the given outputs in place of the expectations."""
    lines: list[str] = []
    for block, output in zip(blocks, outputs, strict=True):
        lines.extend(block.preamble)
        lines.append(block.command)
        lines.append("----")
        lines.extend(output or ["ok"])
    lines.extend(trailer)
    return "\n".join(lines).rstrip("\n") + "\n"


def parse_arguments(text: str) -> tuple[list[str], dict[str, str]]:
    """Positional words and ``key=value`` pairs; lists keep their parentheses."""
    positional: list[str] = []
    keyed: dict[str, str] = {}
    for token in re.findall(r"\S+=\([^)]*\)|\([^)]*\)|\S+", text):
        if "=" in token and not token.startswith("("):
            key, value = token.split("=", 1)
            keyed[key] = value
        else:
            positional.append(token)
    return positional, keyed


def parse_ids(text: str) -> list[int]:
    """``(1,2,3)`` or ``1`` into ids."""
    inner = text.strip("()")
    return [int(part) for part in inner.split(",") if part.strip()]


def parse_bool(text: str) -> bool:
    """``true``/``false``."""
    if text not in ("true", "false"):
        raise ValueError(f"not a boolean: {text}")
    return text == "true"


# -- running ---------------------------------------------------------------------


@dataclass
class ConfigOptions:
    """Config fields a script can set with add-nodes."""

    values: dict[str, str] = field(default_factory=dict)

    def make(self, node_id: int, applied_index: int) -> Config:
        v = self.values
        bug = v.get("bug")
        return Config(
            node_id,
            applied_index=applied_index,
            election_timeout_ticks=int(v.get("election", 10)),
            heartbeat_interval_ticks=int(v.get("heartbeat", 1)),
            pre_vote=parse_bool(v.get("prevote", "false")),
            check_quorum=parse_bool(v.get("checkquorum", "false")),
            read_only_option=ReadOnlyOption(v.get("read-only", "safe")),
            append_bytes_max=int(v.get("append-bytes-max", 1 << 20)),
            inflight_messages_max=int(v.get("inflight-max", 256)),
            uncommitted_bytes_max=int(v.get("uncommitted-bytes-max", 1 << 26)),
            committed_bytes_max_per_ready=int(v.get("max-committed-bytes", 1 << 26)),
            planted_bugs=frozenset({PlantedBug(bug)}) if bug else frozenset(),
        )


class ScenarioRunner:
    """Runs one script's commands against one cluster."""

    def __init__(self) -> None:
        self.cluster: RaftCluster | None = None
        self.options = ConfigOptions()
        self.commands: dict[str, Callable[[list[str], dict[str, str]], list[str]]] = {
            "add-nodes": self.add_nodes,
            "campaign": self.campaign,
            "propose": self.propose,
            "propose-conf-change": self.propose_conf_change,
            "read-index": self.read_index,
            "transfer-leader": self.transfer_leader,
            "report-unreachable": self.report_unreachable,
            "tick": self.tick,
            "tick-election": self.tick_election,
            "tick-heartbeat": self.tick_heartbeat,
            "tick-all": self.tick_all,
            "process-ready": self.process_ready,
            "deliver-msgs": self.deliver_msgs,
            "drop-msgs": self.drop_msgs,
            "stabilize": self.stabilize,
            "partition": self.partition,
            "isolate": self.isolate,
            "heal": self.heal,
            "crash": self.crash,
            "restart": self.restart,
            "compact": self.compact,
            "raft-log": self.raft_log,
            "raft-state": self.raft_state,
            "status": self.status,
            "applied": self.applied,
        }

    def run(self, command: str) -> list[str]:
        """Run one command line and return its output lines."""
        name, _, rest = command.partition(" ")
        handler = self.commands.get(name)
        if handler is None:
            raise ValueError(f"unknown command {name!r}")
        positional, keyed = parse_arguments(rest)
        return handler(positional, keyed)

    @property
    def c(self) -> RaftCluster:
        assert self.cluster is not None, "add-nodes first"
        return self.cluster

    # -- setup and inputs ---------------------------------------------------------

    def add_nodes(self, args: list[str], kw: dict[str, str]) -> list[str]:
        count = int(args[0])
        if self.cluster is None:
            self.options = ConfigOptions(kw)
            ids = list(range(1, count + 1))
            voters = parse_ids(kw["voters"]) if "voters" in kw else ids
            learners = parse_ids(kw.get("learners", "()"))
            self.cluster = RaftCluster(
                ids,
                Random(0),
                config_factory=self.options.make,
                voters=voters,
                learners=learners,
                snapshot_index=int(kw.get("index", 0)),
            )
            return [f"added {', '.join(map(str, ids))}"]
        first = max(self.c.members) + 1
        added = list(range(first, first + count))
        for node_id in added:
            try:
                self.c.add_member(node_id)
            except ValueError as error:
                return [f"error: {error}"]
        return [f"added {', '.join(map(str, added))}"]

    def campaign(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.c.node(int(args[0])).campaign()
        return []

    @staticmethod
    def _unless_dropped(request: Callable[[], None]) -> list[str]:
        """Run a request the core may refuse; a refusal is the output."""
        try:
            request()
        except ProposalDropped as dropped:
            return [f"dropped: {dropped}"]
        return []

    def propose(self, args: list[str], kw: dict[str, str]) -> list[str]:
        node = self.c.node(int(args[0]))
        return self._unless_dropped(lambda: node.propose(args[1].encode()))

    def propose_conf_change(self, args: list[str], kw: dict[str, str]) -> list[str]:
        ((key, value),) = kw.items()
        kind = {
            "add-voter": ConfChangeType.ADD_VOTER,
            "add-learner": ConfChangeType.ADD_LEARNER,
            "remove": ConfChangeType.REMOVE,
        }[key]
        node = self.c.node(int(args[0]))
        return self._unless_dropped(lambda: node.propose_conf_change(ConfChange(kind, int(value))))

    def read_index(self, args: list[str], kw: dict[str, str]) -> list[str]:
        node = self.c.node(int(args[0]))
        return self._unless_dropped(lambda: node.read_index(args[1].encode()))

    def transfer_leader(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.c.node(int(args[0])).transfer_leader(int(args[1]))
        return []

    def report_unreachable(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.c.node(int(args[0])).report_unreachable(int(args[1]))
        return []

    def tick(self, args: list[str], kw: dict[str, str]) -> list[str]:
        times = int(args[1]) if len(args) > 1 else 1
        for _ in range(times):
            self.c.node(int(args[0])).tick()
        self.c.checker.observe(self.c)
        return []

    def tick_election(self, args: list[str], kw: dict[str, str]) -> list[str]:
        node = self.c.node(int(args[0]))
        for _ in range(node.raft.randomized_election_timeout_ticks):
            node.tick()
        self.c.checker.observe(self.c)
        return []

    def tick_heartbeat(self, args: list[str], kw: dict[str, str]) -> list[str]:
        node = self.c.node(int(args[0]))
        for _ in range(node.raft.config.heartbeat_interval_ticks):
            node.tick()
        self.c.checker.observe(self.c)
        return []

    def tick_all(self, args: list[str], kw: dict[str, str]) -> list[str]:
        for _ in range(int(args[0]) if args else 1):
            self.c.tick_all()
        return []

    # -- readiness and messages ------------------------------------------------------

    def process_ready(self, args: list[str], kw: dict[str, str]) -> list[str]:
        ids = [int(a) for a in args] or self.c.up_ids()
        lines: list[str] = []
        for node_id in ids:
            ready = self.c.process_ready(node_id)
            if ready is None:
                lines.append(f"> {node_id}: no Ready")
                continue
            lines.append(f"> {node_id} handling Ready")
            lines.extend("  " + line for line in render_ready(ready))
        return lines

    def _select(self, args: list[str], kw: dict[str, str]) -> list[int]:
        recipients = {int(a) for a in args}
        wanted_type = TYPES_BY_NAME[kw["type"]] if "type" in kw else None
        return [
            position
            for position, m in enumerate(self.c.in_flight)
            if (not recipients or m.recipient in recipients)
            and (wanted_type is None or m.type is wanted_type)
        ]

    def _take(self, positions: list[int]) -> list[Message]:
        """Remove the messages at ``positions`` from flight, keeping their order."""
        taken = [self.c.in_flight[p] for p in positions]
        for position in reversed(positions):
            del self.c.in_flight[position]
        return taken

    def _deliver_now(self, message: Message, drop: bool = False) -> str:
        """Put one message back in flight and deliver (or drop) it at once."""
        self.c.in_flight.append(message)
        last = len(self.c.in_flight) - 1
        if drop:
            self.c.drop(last)
            return f"dropped: {render_message(message)}"
        recipient = self.c.members.get(message.recipient)
        note = ""
        if recipient is None or not recipient.is_up():
            note = "  (dropped: recipient down)"
        elif not self.c.link_open(message.sender, message.recipient):
            note = "  (dropped: partitioned)"
        self.c.deliver(last)
        return render_message(message) + note

    def deliver_msgs(self, args: list[str], kw: dict[str, str]) -> list[str]:
        dropped_for = set(parse_ids(kw["drop"])) if "drop" in kw else set()
        messages = self._take(self._select(args, kw))
        lines = [self._deliver_now(m, drop=m.recipient in dropped_for) for m in messages]
        return lines or ["no messages"]

    def drop_msgs(self, args: list[str], kw: dict[str, str]) -> list[str]:
        messages = self._take(self._select(args, kw))
        return [self._deliver_now(m, drop=True) for m in messages] or ["no messages"]

    def stabilize(self, args: list[str], kw: dict[str, str]) -> list[str]:
        lines: list[str] = []
        for _ in range(1000):
            ids = [int(a) for a in args] or self.c.up_ids()
            moved = False
            for node_id in ids:
                ready = self.c.process_ready(node_id)
                if ready is not None:
                    moved = True
                    lines.append(f"> {node_id} handling Ready")
                    lines.extend("  " + line for line in render_ready(ready))
            for node_id in ids:
                messages = self._take(self._select([str(node_id)], {}))
                if messages:
                    moved = True
                    lines.append(f"> {node_id} receiving messages")
                    lines.extend("  " + self._deliver_now(m) for m in messages)
            if not moved:
                return lines or ["ok"]
        raise AssertionError("did not stabilize in 1000 rounds")

    # -- faults --------------------------------------------------------------------------

    def partition(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.c.partition(*(parse_ids(group) for group in args))
        return []

    def isolate(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.c.isolate(int(args[0]))
        return []

    def heal(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.c.heal()
        return []

    def crash(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.c.crash(int(args[0]))
        return []

    def restart(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.c.restart(int(args[0]))
        return self.raft_state([args[0]], {})

    def compact(self, args: list[str], kw: dict[str, str]) -> list[str]:
        node_id = int(args[0])
        if not self.c.compact(node_id):
            return ["nothing to compact"]
        storage = self.c.members[node_id].storage
        return [
            f"snapshot at {storage.snapshot().metadata.index}, first index {storage.first_index()}"
        ]

    # -- inspection ------------------------------------------------------------------------

    def raft_log(self, args: list[str], kw: dict[str, str]) -> list[str]:
        log = self.c.node(int(args[0])).raft.log
        first, last = log.first_index(), log.last_index()
        if last < first:
            return [f"log is empty: first index={first}, last index={last}"]
        return [render_entry(e) for e in log.slice(first, last + 1, 1 << 62)]

    def raft_state(self, args: list[str], kw: dict[str, str]) -> list[str]:
        ids = [int(a) for a in args] or sorted(self.c.members)
        lines = []
        for node_id in ids:
            member = self.c.members[node_id]
            if member.node is None:
                lines.append(f"{node_id}: down")
                continue
            raft = member.node.raft
            kind = "learner" if node_id in raft.tracker.conf_state.learners else "voter"
            if not raft.tracker.is_member(node_id):
                kind = "non-member"
            lines.append(
                f"{node_id}: {raft.role.value} ({kind}) Term:{raft.term} Lead:{raft.leader_id} "
                f"Commit:{raft.log.committed} Applied:{raft.log.applied} "
                f"Last:{raft.log.last_index()}"
            )
        return lines

    def status(self, args: list[str], kw: dict[str, str]) -> list[str]:
        raft = self.c.node(int(args[0])).raft
        lines = [f"voters:{raft.tracker.voters()} learners:{raft.tracker.conf_state.learners}"]
        lines.extend(
            f"{node}: {progress!r}".rstrip()
            for node, progress in sorted(raft.tracker.progress.items())
        )
        return lines

    def applied(self, args: list[str], kw: dict[str, str]) -> list[str]:
        app = self.c.members[int(args[0])].app
        payloads = b" ".join(app.applied_payloads).decode()
        return [f"applied index {app.applied_index}: {payloads}"]


def run_script(path: Path, rewrite: bool) -> tuple[list[str], str]:
    """Run a script; return mismatch reports (empty when it passes) and the actual text."""
    blocks, trailer = parse_script(path.read_text())
    runner = ScenarioRunner()
    outputs: list[list[str]] = []
    mismatches: list[str] = []
    for block in blocks:
        try:
            output = runner.run(block.command)
        except (RaftError, ValueError, KeyError, AssertionError) as error:
            # Invariant violations show up here too, so a script can expect one.
            output = [f"error: {type(error).__name__}: {error}"]
        output = output or ["ok"]
        outputs.append(output)
        if output != block.expected and not rewrite:
            mismatches.append(
                f"{path.name}:{block.line_number}: {block.command}\n"
                "expected:\n  " + "\n  ".join(block.expected) + "\n"
                "actual:\n  " + "\n  ".join(output)
            )
    return mismatches, render_script(blocks, outputs, trailer)


def strip_expectations(text: str) -> str:
    """The script with every expected output removed (to edit commands, then --rewrite)."""
    blocks, trailer = parse_script(text)
    lines: list[str] = []
    for block in blocks:
        lines.extend(block.preamble)
        lines.extend([block.command, "----"])
    lines.extend(trailer)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip("\n") + "\n"


if __name__ == "__main__":
    import sys

    # python -m tests.raft.harness strip FILE...: drop expectations before editing commands.
    if len(sys.argv) < 3 or sys.argv[1] != "strip":
        sys.exit("usage: python -m tests.raft.harness strip FILE...")
    for name in sys.argv[2:]:
        script = Path(name)
        script.write_text(strip_expectations(script.read_text()))
