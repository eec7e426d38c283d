"""``syncd simulator``: run a simulated store from the command line.

The first line on stdout is ``api_url=http://HOST:PORT/v1``, printed once the
API listens, so a parent process can read it; the next lines give the API key,
the webhook target and the settings that point syncd at the store. The store
then sells and keeps serving until SIGINT or SIGTERM (or, with
``--exit-after-selling``, until every delivery is done), prints a short summary
and exits 0. ``--truth-file`` writes the final state (see ``Truth``) plus the
ids of delivered and lost events as JSON.
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
from urllib.parse import parse_qs, urlsplit

import orjson

from syncd.simulator.faults import Faults
from syncd.simulator.store import SimulatedStore
from syncd.simulator.world import Quirks


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, unless it is None or False (flags, "not set")
    or the help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd simulator",
        description="A simulated Shoperti store: API on loopback, selling, webhooks. "
        "It prints the API URL and key (and the webhook target) to point syncd at.",
        formatter_class=DefaultsHelpFormatter,
    )
    serve = parser.add_argument_group("serving")
    serve.add_argument("--host", default="127.0.0.1", help="address the API listens on")
    serve.add_argument("--port", type=int, default=0, help="API port; 0 picks a free one")
    serve.add_argument(
        "--api-key", default="sk_test", help="the key syncd must send (SYNCD_API_KEY)"
    )
    serve.add_argument("--per-page-max", type=int, default=100, help="largest page size")
    serve.add_argument(
        "--retention-days", type=float, default=30.0, help="how long events stay listable"
    )

    sell = parser.add_argument_group("selling")
    sell.add_argument("--seed", type=int, default=0, help="random seed: same seed, same store")
    sell.add_argument("--orders", type=int, default=100, help="orders to sell (with webhooks)")
    sell.add_argument(
        "--customers", type=int, default=None, help="customers (default: 40%% of --orders)"
    )
    sell.add_argument("--rate", type=float, default=0.0, help="events per second, 0 = no limit")
    sell.add_argument("--history-orders", type=int, default=0, help="past orders, no webhooks")
    sell.add_argument(
        "--history-days", type=float, default=365.0, help="how far back the history goes"
    )
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
    sell.add_argument(
        "--truth-file",
        type=Path,
        default=None,
        help="at exit, write the store's final orders and customers (JSON) here",
    )

    hooks = parser.add_argument_group("webhooks")
    hooks.add_argument(
        "--webhook-url",
        default=None,
        help="where to POST webhooks, e.g. "
        "http://127.0.0.1:8080/webhooks/shoperti?token=TOKEN (default: no webhooks)",
    )
    hooks.add_argument(
        "--time-scale",
        type=float,
        default=1 / 3600,
        help="real seconds per platform second (default 1/3600: an hour is 1 s)",
    )
    hooks.add_argument("--concurrency", type=int, default=16, help="deliveries in flight")
    hooks.add_argument(
        "--drop-rate", type=float, default=0.0, help="share of events never delivered (0-1)"
    )
    hooks.add_argument(
        "--duplicate-rate", type=float, default=0.0, help="share delivered twice (0-1)"
    )
    hooks.add_argument(
        "--reorder-window", type=int, default=0, help="deliveries shuffled within this many"
    )
    hooks.add_argument(
        "--delay-max", type=float, default=0.0, help="random delay per delivery, seconds"
    )

    api = parser.add_argument_group("API faults and quirks")
    api.add_argument(
        "--api-429-rate", type=float, default=0.0, help="share of API answers that are 429"
    )
    api.add_argument(
        "--api-5xx-rate", type=float, default=0.0, help="share of API answers that are 5xx"
    )
    api.add_argument(
        "--api-slow-rate", type=float, default=0.0, help="share of API answers delayed"
    )
    api.add_argument("--api-slow-seconds", type=float, default=0.0, help="delay of a slow answer")
    api.add_argument("--retry-after", type=int, default=1, help="Retry-After of a 429, seconds")
    api.add_argument(
        "--api-latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="every API answer takes this long (a real API's round trip)",
    )
    api.add_argument(
        "--api-max-concurrent",
        type=int,
        default=0,
        metavar="N",
        help="answer 429 (with Retry-After) to requests beyond N in flight; 0: no limit",
    )
    api.add_argument(
        "--omit-links", action="store_true", help="lists without links.next (page numbers only)"
    )
    api.add_argument(
        "--objects",
        choices=("bare", "wrapped", "random"),
        default="random",
        help='single objects bare or as {"data": …}',
    )
    api.add_argument(
        "--deleted-by-id",
        choices=("404", "tombstone"),
        default="404",
        help="what GET of a deleted object answers",
    )
    api.add_argument(
        "--naive-timestamp-rate",
        type=float,
        default=0.02,
        help="share of timestamps without a UTC offset",
    )
    api.add_argument(
        "--numeric-money-rate",
        type=float,
        default=0.3,
        help="share of amounts sent as JSON numbers instead of strings",
    )
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
                api_latency=args.api_latency,
                api_max_concurrent=args.api_max_concurrent,
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
        for line in _connection_lines(store):
            print(line, flush=True)
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


def _connection_lines(store: SimulatedStore) -> list[str]:
    """What syncd needs to talk to this store, after the ``api_url=`` line."""
    lines = [f"api_key={store.api_key}", f"webhook_url={store.webhook_url or '-'}"]
    lines.append(f"point syncd at it: SYNCD_API_URL={store.api_url} SYNCD_API_KEY={store.api_key}")
    if store.webhook_url:
        token = parse_qs(urlsplit(store.webhook_url).query).get("token", [None])[0]
        target = f"webhooks go to {store.webhook_url}"
        if token:
            target += f" (syncd serve needs SYNCD_WEBHOOK_SECRET={token})"
        lines.append(target)
    else:
        lines.append(
            "no webhooks are sent: give --webhook-url "
            "http://127.0.0.1:8080/webhooks/shoperti?token=TOKEN for a syncd serve "
            "with SYNCD_WEBHOOK_SECRET=TOKEN"
        )
    return lines


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
    print(f"api: answers {store.api_answers}, {store.api_busy} refused as busy", flush=True)


def _write_truth(store: SimulatedStore, path: Path) -> None:
    document = store.truth().to_json()
    document["delivered_event_ids"] = store.delivered_event_ids
    document["lost_event_ids"] = store.lost_event_ids
    path.write_bytes(orjson.dumps(document))
