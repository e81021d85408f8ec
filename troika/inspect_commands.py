"""``troika inspect hot|usage`` and ``troika del-prefix``: troika's views beyond etcd's.

``inspect hot`` asks every endpoint for its hot keys or prefixes (``/troika/v1/hot``) and
merges the members' space-saving summaries into one (each member counts the requests it
served, so the cluster's traffic is the sum; an item absent from a member's full summary gets
that member's floor, as :func:`storage.usage.sketch.merge` does). ``inspect usage`` asks every
endpoint for the storage use under a prefix (``/troika/v1/usage``) and shows the answer of the
member at the highest revision (every member stores the same keys; those behind lag). Both
print a table, or ``-w json`` the merged answer; ``inspect hot --html FILE`` (or ``--png``)
draws the top prefixes over the last 15 minutes.

``del-prefix`` is :mod:`troika.del_prefix`'s batched, paced, resumable deletion.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import trio
import typer

from net.http.client import HttpClient
from net.http.errors import HttpError
from net.inspect_page import hot_page
from net.v3.client import endpoint_url
from storage.usage.sketch import Item, merge
from troika import del_prefix as deletion
from troika.ctl import (
    CtlError,
    GlobalOptions,
    ctl_command,
    make_client,
    parse_go_duration,
    run_client,
    to_bytes,
)

inspect_app = typer.Typer(
    help="troika's views of the cluster that etcd lacks: hot keys and prefixes, storage use.",
    no_args_is_help=True,
)

# -- the pure core: merging and rendering ------------------------------------------------------


def merge_hot(answers: Sequence[dict[str, Any]], limit: int) -> dict[str, Any]:
    """The members' hot answers as one (items summed with the members' floors, series summed
    for the merged names)."""
    assert answers
    parts = [([Item.from_json(item) for item in a["items"]], int(a["floor"])) for a in answers]
    items, floor = merge(parts, limit)
    names = [item.key.decode("utf-8", "surrogateescape") for item in items]
    by_age: dict[int, list[int]] = {}
    for answer in answers:
        own = [item["key"] for item in answer["items"]]
        for point in answer["series"]:
            sums = by_age.setdefault(int(point["age_minutes"]), [0] * len(names))
            counts = dict(zip(own, point["counts"], strict=True))
            for index, name in enumerate(names):
                sums[index] += int(counts.get(name, 0))
    first = answers[0]
    return {
        "window": first["window"],
        "depth": first["depth"],
        "prefix": first["prefix"],
        "members": len(answers),
        "total": sum(int(a["total"]) for a in answers),
        "floor": floor,
        "items": [item.to_json() for item in items],
        "series": [{"age_minutes": age, "counts": by_age[age]} for age in sorted(by_age)[::-1]],
    }


def merge_usage(answers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The answer of the member at the highest revision, with every member's revision."""
    assert answers
    chosen = max(answers, key=lambda answer: int(answer["revision"]))
    revisions = {str(a["member_id"]): int(a["revision"]) for a in answers}
    return {**chosen, "revisions": revisions}


def table(headers: list[str], rows: list[list[str]]) -> str:
    """An ASCII table as etcdctl draws one."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    rule = "+" + "+".join("-" * (width + 2) for width in widths) + "+"

    def line(cells: list[str]) -> str:
        return "|" + "|".join(f" {c:<{w}} " for c, w in zip(cells, widths, strict=True)) + "|"

    return "\n".join([rule, line(headers), rule, *(line(row) for row in rows), rule])


def render_hot(answer: dict[str, Any]) -> str:
    """The merged hot answer as a table and a heading line."""
    what = "keys" if answer["depth"] == 0 else f"prefixes at depth {answer['depth']}"
    heading = (
        f"hot {what} under {answer['prefix']!r}, last {answer['window']}, "
        f"{answer['members']} member(s), {answer['total']} requests counted"
    )
    rows = [
        [item["key"], str(item["count"]), f"<={item['error']}", str(item["reads"]),
         str(item["writes"]), str(item["events"]), str(item["bytes"])]
        for item in answer["items"]
    ]  # fmt: skip
    headers = ["PREFIX" if answer["depth"] else "KEY", "REQUESTS", "ERROR", "READS", "WRITES",
               "WATCH EVENTS", "BYTES"]  # fmt: skip
    return heading + "\n" + table(headers, rows)


def render_usage(answer: dict[str, Any]) -> str:
    """The usage answer as a table (rows, other, total) and a heading line."""
    revisions = ", ".join(f"{m}@{r}" for m, r in sorted(answer["revisions"].items()))
    heading = (
        f"storage under {answer['prefix']!r} by depth {answer['depth']}, from member "
        f"{answer['member_id']} at revision {answer['revision']} (members: {revisions})"
    )

    def row(use: dict[str, Any]) -> list[str]:
        return [use["prefix"], str(use["keys"]), str(use["bytes"]), str(use["revisions"]),
                str(use["history_bytes"])]  # fmt: skip

    rows = [row(use) for use in answer["rows"]]
    if answer["other"]["revisions"]:
        rows.append(row(answer["other"]))
    rows.append(row({**answer["total"], "prefix": "(total)"}))
    headers = ["PREFIX", "KEYS", "BYTES", "REVISIONS KEPT", "BYTES KEPT"]
    return heading + "\n" + table(headers, rows)


def draw_png(answer: dict[str, Any], path: Path) -> None:
    """The top prefixes' requests per minute, one line each (matplotlib, Agg)."""
    import matplotlib  # noqa: PLC0415 (slow to import; only --png needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(figsize=(8, 4))
    ages = [-int(point["age_minutes"]) for point in answer["series"]]
    for index, item in enumerate(answer["items"][:8]):
        counts = [point["counts"][index] for point in answer["series"]]
        axes.plot(ages, counts, "o-", label=item["key"])
    axes.set_xlabel("minutes ago")
    axes.set_ylabel("requests per minute")
    axes.set_title(f"troika: hot prefixes at depth {answer['depth']} ({answer['members']} members)")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


# -- the shell ---------------------------------------------------------------------------------


async def cluster_endpoints(http: HttpClient, endpoints: list[str], timeout_s: float) -> list[str]:
    """Every member's client URLs, from the first endpoint that lists the members (etcdctl's
    ``--cluster``); the given endpoints if none does."""
    for endpoint in endpoints:
        try:
            reply = await http.request(
                "POST", endpoint + "/v3/cluster/member/list", body=b"{}", timeout=timeout_s
            )
        except HttpError:
            continue
        if reply.status == 200:
            urls = [url for m in reply.json().get("members", []) for url in m.get("clientURLs", [])]
            if urls:
                return [endpoint_url(url) for url in urls]
    return endpoints


def fetch_all(
    options: GlobalOptions, path: str, query: dict[str, str], *, cluster: bool = False
) -> list[dict[str, Any]]:
    """GET ``path`` from every endpoint (every member's, with ``cluster``); the answers of
    those that answered.

    Raises:
        CtlError: no endpoint answered, or one refused the query (its error).
    """
    client = make_client(options)
    endpoints = list(client.endpoints)
    target = path + "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    timeout_s = parse_go_duration(options.command_timeout)

    async def main() -> tuple[list[dict[str, Any]], list[str]]:
        answers: list[dict[str, Any]] = []
        failures: list[str] = []
        http = client.http
        try:
            if cluster:
                endpoints[:] = await cluster_endpoints(http, endpoints, timeout_s)
            for endpoint in endpoints:
                try:
                    reply = await http.request("GET", endpoint + target, timeout=timeout_s)
                except HttpError as error:
                    failures.append(f"{endpoint}: {error}")
                    continue
                if reply.status != 200:
                    raise CtlError(1, f"{endpoint}: {reply.json().get('error', reply.text)}")
                answers.append(reply.json())
        finally:
            await http.aclose()
        return answers, failures

    answers, failures = trio.run(main)
    for failure in failures:
        typer.echo(f"warning: {failure}", err=True)
    if not answers:
        raise CtlError(1, "no endpoint answered")
    return answers


def _prefix_text(prefix: str) -> str:
    return to_bytes(prefix).decode("latin-1")  # one char a byte: urlencode sends the bytes


PrefixOption = Annotated[str, typer.Option("--prefix", help="Only keys under this prefix.")]
ClusterOption = Annotated[
    bool, typer.Option("--cluster", help="Ask every member listed by the endpoints.")
]


@ctl_command(inspect_app, "hot")
def hot_command(
    options: GlobalOptions,
    *,
    prefix: PrefixOption = "",
    depth: Annotated[
        int, typer.Option("--depth", help="0: whole keys; N: prefixes up to the N-th '/'.")
    ] = 1,
    window: Annotated[str, typer.Option("--window", help="1m, 5m or 15m.")] = "1m",
    limit: Annotated[int, typer.Option("--limit", help="Rows shown.", min=1, max=1000)] = 20,
    html: Annotated[Path | None, typer.Option("--html", help="Also write an HTML page.")] = None,
    png: Annotated[Path | None, typer.Option("--png", help="Also write a PNG chart.")] = None,
    cluster: ClusterOption = False,
) -> None:
    """The hot keys or prefixes, merged over every endpoint."""
    query = {"prefix": _prefix_text(prefix), "depth": str(depth), "window": window,
             "limit": str(limit)}  # fmt: skip
    answer = merge_hot(fetch_all(options, "/troika/v1/hot", query, cluster=cluster), limit)
    if html is not None:
        html.write_bytes(hot_page([answer], "troika: hot prefixes (merged over the members)"))
    if png is not None:
        draw_png(answer, png)
    typer.echo(json.dumps(answer) if options.write_out == "json" else render_hot(answer))


@ctl_command(inspect_app, "usage")
def usage_command(
    options: GlobalOptions,
    *,
    prefix: PrefixOption = "",
    depth: Annotated[int, typer.Option("--depth", help="Group by prefix at this depth.")] = 1,
    limit: Annotated[int, typer.Option("--limit", help="Rows shown.", min=1, max=1000)] = 50,
    cluster: ClusterOption = False,
) -> None:
    """Storage use (keys, bytes, revisions kept) per prefix, from the most recent member."""
    query = {"prefix": _prefix_text(prefix), "depth": str(depth), "limit": str(limit)}
    answer = merge_usage(fetch_all(options, "/troika/v1/usage", query, cluster=cluster))
    typer.echo(json.dumps(answer) if options.write_out == "json" else render_usage(answer))


def del_prefix_command(
    options: GlobalOptions,
    *,
    prefix: Annotated[str, typer.Argument(help="Delete every key starting with this.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be deleted; delete nothing.")
    ] = False,
    batch: Annotated[
        int, typer.Option("--batch", help="Keys per batch (one revision each).")
    ] = deletion.BATCH_KEYS_DEFAULT,
    rate: Annotated[
        float, typer.Option("--rate", help="At most this many keys deleted per second.")
    ] = deletion.RATE_KEYS_S_DEFAULT,
) -> None:
    """Delete every key under PREFIX in bounded batches at a bounded rate (resumable: run it
    again after a crash; --dry-run shows counts and bytes first)."""
    key = to_bytes(prefix)
    try:
        deletion.check_plan(key, batch, rate)
    except ValueError as error:
        raise CtlError(1, str(error)) from None
    if dry_run:
        _dry_run(options, prefix, batch, rate)
        return
    summary = run_client(
        options,
        lambda client: deletion.delete_prefix(
            client, key, batch_keys=batch, rate_keys_s=rate, on_batch=_print_batch
        ),
    )
    typer.echo(
        f"deleted {summary.deleted} keys in {summary.batches} batches "
        f"(revisions {summary.first_revision}..{summary.last_revision})"
    )


def _print_batch(batch: deletion.Batch) -> None:
    first = batch.first_key.decode("utf-8", "replace")
    last = batch.last_key.decode("utf-8", "replace")
    typer.echo(f"batch: {batch.deleted} keys [{first} .. {last}] at revision {batch.revision}")


def _dry_run(options: GlobalOptions, prefix: str, batch: int, rate: float) -> None:
    query = {"prefix": _prefix_text(prefix), "depth": "0", "limit": "1"}
    answer = merge_usage(fetch_all(options, "/troika/v1/usage", query))
    total = answer["total"]
    batches, seconds = deletion.planned_seconds(int(total["keys"]), batch, rate)
    typer.echo(
        f"dry run: would delete {total['keys']} keys ({total['bytes']} bytes of keys and "
        f"values; {total['revisions']} revisions kept, {total['history_bytes']} bytes) under "
        f"{prefix!r} at revision {answer['revision']}, in {batches} batches of at most {batch} "
        f"keys (one revision each), taking at least {seconds:.1f} s at {rate:g} keys/s"
    )


def register(app: typer.Typer) -> None:
    """Add ``inspect hot``, ``inspect usage`` and ``del-prefix`` to ``app``."""
    app.add_typer(inspect_app, name="inspect")
    ctl_command(app, "del-prefix")(del_prefix_command)
