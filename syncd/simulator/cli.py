"""``syncd simulator``: run a simulated store from the command line.

The first line on stdout is ``api_url=http://HOST:PORT/v1``, printed once the API
listens, so a parent process can read it. The store then sells and keeps serving
until SIGINT or SIGTERM (or, with ``--exit-after-selling``, until every delivery is
done), prints a short summary and exits 0. ``--truth-file`` writes the final state
(see ``Truth``) plus the ids of delivered and lost events as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading
from pathlib import Path

import orjson

from syncd.simulator.faults import Faults
from syncd.simulator.store import SimulatedStore
from syncd.simulator.world import Quirks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd simulator",
        description="A simulated Shoperti store: API on loopback, selling, webhooks.",
    )
    serve = parser.add_argument_group("serving")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    serve.add_argument("--api-key", default="sk_test")
    serve.add_argument("--per-page-max", type=int, default=100)
    serve.add_argument("--retention-days", type=float, default=30.0)

    sell = parser.add_argument_group("selling")
    sell.add_argument("--seed", type=int, default=0)
    sell.add_argument("--orders", type=int, default=100)
    sell.add_argument("--customers", type=int, default=None, help="default: 40%% of --orders")
    sell.add_argument("--rate", type=float, default=0.0, help="events per second, 0 = no limit")
    sell.add_argument("--history-orders", type=int, default=0, help="past orders, no webhooks")
    sell.add_argument("--history-days", type=float, default=365.0)
    sell.add_argument(
        "--exit-after-selling",
        action="store_true",
        help="exit once sold and every delivery is done",
    )
    sell.add_argument(
        "--wait-timeout",
        type=float,
        default=300.0,
        help="with --exit-after-selling: how long to wait for deliveries",
    )
    sell.add_argument("--truth-file", type=Path, default=None)

    hooks = parser.add_argument_group("webhooks")
    hooks.add_argument("--webhook-url", default=None)
    hooks.add_argument(
        "--time-scale",
        type=float,
        default=1 / 3600,
        help="real seconds per platform second (default 1/3600: an hour is 1 s)",
    )
    hooks.add_argument("--concurrency", type=int, default=16)
    hooks.add_argument("--drop-rate", type=float, default=0.0)
    hooks.add_argument("--duplicate-rate", type=float, default=0.0)
    hooks.add_argument("--reorder-window", type=int, default=0)
    hooks.add_argument("--delay-max", type=float, default=0.0)

    api = parser.add_argument_group("API faults and quirks")
    api.add_argument("--api-429-rate", type=float, default=0.0)
    api.add_argument("--api-5xx-rate", type=float, default=0.0)
    api.add_argument("--api-slow-rate", type=float, default=0.0)
    api.add_argument("--api-slow-seconds", type=float, default=0.0)
    api.add_argument("--retry-after", type=int, default=1)
    api.add_argument("--omit-links", action="store_true")
    api.add_argument("--objects", choices=("bare", "wrapped", "random"), default="random")
    api.add_argument("--deleted-by-id", choices=("404", "tombstone"), default="404")
    api.add_argument("--naive-timestamp-rate", type=float, default=0.02)
    api.add_argument("--numeric-money-rate", type=float, default=0.3)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        store = SimulatedStore(
            seed=args.seed,
            api_key=args.api_key,
            webhook_url=args.webhook_url,
            faults=Faults(
                drop_rate=args.drop_rate,
                duplicate_rate=args.duplicate_rate,
                reorder_window=args.reorder_window,
                delay_max=args.delay_max,
                api_429_rate=args.api_429_rate,
                api_5xx_rate=args.api_5xx_rate,
                api_slow_rate=args.api_slow_rate,
                api_slow_seconds=args.api_slow_seconds,
                api_retry_after=args.retry_after,
            ),
            time_scale=args.time_scale,
            retention_seconds=int(args.retention_days * 86400),
            per_page_max=args.per_page_max,
            host=args.host,
            port=args.port,
            quirks=Quirks(
                naive_timestamp_rate=args.naive_timestamp_rate,
                numeric_money_rate=args.numeric_money_rate,
                omit_links=args.omit_links,
                single_objects=args.objects,
                deleted_by_id=args.deleted_by_id,
            ),
            delivery_concurrency=args.concurrency,
        )
    except ValueError as problem:
        print(f"syncd simulator: {problem}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(store, args))
    except OSError as problem:
        print(
            f"syncd simulator: cannot listen on {args.host}:{args.port}: {problem}", file=sys.stderr
        )
        return 1


async def _run(store: SimulatedStore, args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    # Signals reach only the main thread; elsewhere (a test) the caller stops us.
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread():
        signals = ()
    for signum in signals:
        loop.add_signal_handler(signum, stopping.set)
    await store.start()
    try:
        if args.history_orders:  # before the URL line: the parent then sees it all
            store.generate_history(args.history_orders, args.history_days)
        print(f"api_url={store.api_url}", flush=True)
        selling = asyncio.create_task(_sell(store, args))
        stop_waiter = asyncio.create_task(stopping.wait())
        await asyncio.wait({selling, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
        if selling.done():
            selling.result()
            if not args.exit_after_selling:
                await stop_waiter
        else:
            selling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await selling
        stop_waiter.cancel()
    finally:
        await store.stop()
        for signum in signals:
            loop.remove_signal_handler(signum)
    _summarize(store)
    if args.truth_file is not None:
        _write_truth(store, args.truth_file)
    return 0


async def _sell(store: SimulatedStore, args: argparse.Namespace) -> None:
    await store.sell(args.orders, args.customers, rate=args.rate)
    if args.exit_after_selling:
        try:
            await store.wait_deliveries(timeout=args.wait_timeout)
        except TimeoutError:
            print("syncd simulator: deliveries still in flight at --wait-timeout", file=sys.stderr)


def _summarize(store: SimulatedStore) -> None:
    world = store.world
    stats = store.delivery_stats
    print(
        f"sold: {len(world.order_blobs)} orders, {len(world.customer_blobs)} customers, "
        f"{len(world.event_ids)} events ({len(store.sold_event_ids)} with webhooks)"
    )
    if store.webhook_url:
        print(
            f"webhooks: {stats.delivered_events} events delivered, "
            f"{len(store.lost_event_ids)} lost ({len(stats.dropped_for_good)} dropped, "
            f"{len(stats.gave_up)} given up, {stats.in_flight} copies still in flight); "
            f"{stats.attempted} attempts, {stats.retried} retries, "
            f"{stats.duplicated} duplicates, answers {stats.answers}"
        )
    print(f"api: answers {store.api_answers}", flush=True)


def _write_truth(store: SimulatedStore, path: Path) -> None:
    document = store.truth().to_json()
    document["delivered_event_ids"] = store.delivered_event_ids
    document["lost_event_ids"] = store.lost_event_ids
    path.write_bytes(orjson.dumps(document))
