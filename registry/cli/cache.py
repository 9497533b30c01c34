"""CLI commands for the cache lifecycle: `prune [--dry-run]`, `scrub`, `pin`, `unpin`, `status`.

They talk to the server's admin routes (sending CORRAL_ADMIN_TOKEN as Bearer when set, which a
server listening beyond loopback requires), because the server owns the store: pruning from a
second process could not see which blobs are being read or filled right now.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from registry.cli.common import AddCommand, client, human_ago, table
from registry.config import Settings
from registry.units import format_byte_size


def _prune_line(event: dict[str, Any], dry_run: bool) -> str | None:
    status = event.get("status")
    if status == "plan":
        return event["reason"]
    if status == "keep":
        return f"keep      {event['model']}: {event['reason']}"
    if status == "evict":
        return f"{'would evict' if dry_run else 'evicted'} {event['model']}: {event['reason']}"
    if status == "skip":
        return f"skipped   {event['model']}: {event['reason']}"
    if status == "collect":
        what = event.get("digest") or event.get("manifest") or event.get("path")
        size = f" ({format_byte_size(event['frees'])})" if "frees" in event else ""
        return f"{'would remove' if dry_run else 'removed'} {what}{size}: {event['reason']}"
    if status == "warning":
        return f"warning: {event['reason']}"
    if status == "success":
        verb = "would evict" if dry_run else "evicted"
        return (f"{verb} {event['evicted']} models, {format_byte_size(event['freed'])} freed; "
                f"{format_byte_size(event['usage'])} in use of {format_byte_size(event['quota'])}")
    return None


async def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    async with client(settings) as c:
        async for event in c.stream("/api/corral/prune", {"dry_run": args.dry_run}):
            line = _prune_line(event, args.dry_run)
            if line:
                print(line)
    return 0


async def cmd_scrub(args: argparse.Namespace, settings: Settings) -> int:
    summary: dict[str, Any] = {}
    async with client(settings) as c:
        async for event in c.stream("/api/corral/scrub", {}):
            if event["status"] == "success":
                summary = event
            elif event["status"] == "quarantined":
                print(f"{event['digest']}: sha256 mismatch, quarantined (fetched again on the next pull)")
            else:
                print(f"checked {event['completed']}/{event['total']}", end="\r", file=sys.stderr)
    print(f"checked {summary.get('checked', 0)} blobs in {summary.get('seconds', 0):.1f}s, "
          f"{summary.get('quarantined', 0)} quarantined")
    return 1 if summary.get("quarantined") else 0


async def _pin(args: argparse.Namespace, settings: Settings, pinned: bool) -> int:
    async with client(settings) as c:
        data = await c.request("POST", "/api/corral/pin" if pinned else "/api/corral/unpin", {"model": args.model})
    print(f"{'pinned' if pinned else 'unpinned'} '{data['model']}'")
    return 0


async def cmd_pin(args: argparse.Namespace, settings: Settings) -> int:
    return await _pin(args, settings, True)


async def cmd_unpin(args: argparse.Namespace, settings: Settings) -> int:
    return await _pin(args, settings, False)


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    async with client(settings) as c:
        data = await c.request("GET", "/api/corral/status")
    cache, hits = data["cache"], data["hits"]
    quota = f" of {format_byte_size(cache['quota'])}" if cache["quota"] else " (no quota)"
    print(f"cache      {format_byte_size(cache['used'])}{quota}")
    print(f"disk       {format_byte_size(data['disk']['free'])} free of {format_byte_size(data['disk']['total'])}")
    ratio = "-" if hits["ratio"] is None else f"{100 * hits['ratio']:.0f}%"
    print(f"hit ratio  {ratio} ({hits['requests']['hit']} hits, {hits['requests']['miss']} misses)")
    print(f"fills      {len(data['fills'])} in progress; {data['quarantined']} blobs quarantined")
    rows = [["NAME", "SIZE", "PINNED", "LAST USED", "KEPT"]]
    for m in data["models"]:
        rows.append([m["name"], format_byte_size(m["size"]), "yes" if m["pinned"] else "",
                     human_ago(m["last_used"]) if m["last_used"] else "never", m["protected"] or ""])
    print()
    print(table(rows))
    return 0


def add_parsers(add: AddCommand) -> None:
    p = add("prune", cmd_prune, "evict least recently used models over the quota and collect unused blobs")
    p.add_argument("--dry-run", action="store_true", help="print what would go and why, change nothing")
    add("scrub", cmd_scrub, "re-hash every stored blob; quarantine any that do not match (exit 1 if so)")
    p = add("pin", cmd_pin, "never evict this model")
    p.add_argument("model")
    p = add("unpin", cmd_unpin, "let the quota evict this model again")
    p.add_argument("model")
    add("status", cmd_status, "cache usage, hit ratio, fills in progress and models")
