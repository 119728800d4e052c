"""The sweep commands of ``trainrun``: ``sweep SPEC.yaml [--follow]``, ``sweeps``.

Following a sweep shows a live table of its runs (a rich table on a terminal, one plain line
per change otherwise). Exit codes: 0 every run succeeded or was stopped by the median rule,
1 a run failed or timed out, 3 the sweep was cancelled, 130 detached with Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from trainrun.cli_client import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    err,
    print_table,
)
from trainrun.client import Client, RateLimited, Sweep

HEADER = ("VARIANT", "OVERRIDES", "STATUS", "EPOCH", "RANK METRIC")


def sweep_exit(sweep: Sweep) -> int:
    if sweep.counts.get("failed", 0) or sweep.counts.get("timed_out", 0):
        return EXIT_FAILED
    done = sweep.counts.get("succeeded", 0) + sweep.counts.get("stopped", 0)
    return EXIT_OK if done == sweep.runs_total else EXIT_CANCELLED


def _value(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else json.dumps(x)


def sweep_rows(sweep: Sweep) -> list[tuple[str, str, str, str, str]]:
    metric = sweep.rank_by.get("metric", "")
    rows = []
    for variant, run in sweep.runs():
        name = f"v{variant.variant}" + (f" seed {run.seed}" if run.seed is not None else "")
        overrides = " ".join(f"{k}={_value(v)}" for k, v in variant.overrides.items()) or "-"
        best = "-" if run.best_value is None else f"{metric}={run.best_value:.4g}"
        rows.append((name, overrides, run.state, f"{run.epoch}/{run.epochs_total}", best))
    return rows


class SweepDisplay(Protocol):
    def update(self, sweep: Sweep) -> None: ...
    def close(self) -> None: ...


class PlainSweepDisplay:
    """One line per run whenever its state or epoch changes."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str, str]] = {}

    def update(self, sweep: Sweep) -> None:
        for name, overrides, state, epoch, best in sweep_rows(sweep):
            if self.seen.get(name) != (state, epoch):
                self.seen[name] = (state, epoch)
                print(f"{name}  {overrides}  {state}  epoch {epoch}  {best}", flush=True)

    def close(self) -> None:
        pass


class RichSweepDisplay:
    def __init__(self) -> None:
        from rich.live import Live

        self.live = Live(refresh_per_second=4, transient=False)
        self.live.start()

    def update(self, sweep: Sweep) -> None:
        from rich.table import Table

        counts = ", ".join(f"{k} {v}" for k, v in sweep.counts.items() if v)
        table = Table(title=f"sweep {sweep.name} ({sweep.id[:8]}): {sweep.status} - {counts}")
        for column in HEADER:
            table.add_column(column)
        for row in sweep_rows(sweep):
            table.add_row(*row)
        self.live.update(table)

    def close(self) -> None:
        self.live.stop()


def follow_sweep(client: Client, sweep: Sweep, interval: float = 1.0) -> int:
    """Show the runs until the sweep ends; the exit code of how it ended."""
    display: SweepDisplay = RichSweepDisplay() if sys.stdout.isatty() else PlainSweepDisplay()
    try:
        try:
            while True:
                try:
                    sweep = client.get_sweep(sweep.id)
                except RateLimited as exc:
                    time.sleep(exc.retry_after or interval)
                    continue
                display.update(sweep)
                if sweep.is_final:
                    break
                time.sleep(interval)
        finally:
            display.close()
    except KeyboardInterrupt:
        err(f"\ndetached from sweep {sweep.id}; it keeps running")
        return EXIT_INTERRUPTED
    counts = ", ".join(f"{k} {v}" for k, v in sweep.counts.items() if v)
    print(f"sweep {sweep.id} {sweep.status} ({counts})", flush=True)
    for variant, run in sweep.runs():
        if run.stop_reason:
            print(f"  v{variant.variant}: {run.stop_reason}")
    return sweep_exit(sweep)


def cmd_sweep(client: Client, args: argparse.Namespace) -> int:
    sweep = client.submit_sweep(args.spec, idempotency_key=args.idempotency_key)
    if args.json:
        print(sweep.model_dump_json(indent=2))
    else:
        print(sweep.id, flush=True)
        err(f"submitted sweep {sweep.id} ({sweep.name}, {sweep.runs_total} runs)")
    return follow_sweep(client, sweep, args.interval) if args.follow else EXIT_OK


def cmd_sweeps(client: Client, args: argparse.Namespace) -> int:
    page = client.list_sweeps(limit=args.limit)
    rows = [
        (s.id, s.name, s.status, f"{s.runs_total}", f"{s.created_at:%Y-%m-%d %H:%M:%S}")
        for s in page.data
    ]
    print_table(("ID", "NAME", "STATUS", "RUNS", "CREATED"), rows)
    return EXIT_OK


def add_sweep_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    sweep = command("sweep", cmd_sweep, "submit a sweep spec (base + variations, YAML or JSON)")
    sweep.add_argument("spec", help="path to the sweep spec file")
    sweep.add_argument("--follow", "-f", action="store_true", help="watch its runs until it ends")
    sweep.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    sweep.add_argument("--idempotency-key", help="a retried submit with it returns the same sweep")
    sweep.add_argument("--json", action="store_true", help="print the sweep as JSON")

    sweeps = command("sweeps", cmd_sweeps, "list sweeps, newest first")
    sweeps.add_argument("--limit", type=int, default=20)
