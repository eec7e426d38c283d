"""The ``syncd`` command. Subcommands stay thin: parse, call, print.

Exit status 0 on success; otherwise one line on stderr and a non-zero status.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncd.config import Settings, StoreConfig, load_settings
from syncd.errors import SyncdError
from syncd.vocabulary import RETRYABLE, EventStatus

log = logging.getLogger("syncd.cli")


SETTINGS_HELP = """\
settings:
  syncd reads its settings from SYNCD_* environment variables, e.g.
  SYNCD_DATABASE_URL (default sqlite:///syncd.db), SYNCD_API_URL and
  SYNCD_API_KEY (API access), SYNCD_WEBHOOK_SECRET (the webhook token),
  SYNCD_CONFIG (a TOML file with several [[stores]]), SYNCD_HOST/SYNCD_PORT;
  README.md lists them all. Exit status 0 on success; otherwise one line on
  stderr and a non-zero status (2 for invalid settings)."""


def _command(
    commands: Any, name: str, summary: str, description: str | None = None
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=_wrap(description or summary[0].upper() + summary[1:] + "."),
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _wrap(text: str) -> str:
    """Fill plain paragraphs (the help keeps line breaks for the epilog's sake)."""
    import textwrap

    return "\n\n".join(
        part if "\n" in part else textwrap.fill(part, 78) for part in text.split("\n\n")
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="Keep a SQL database in step with a Shoperti store.",
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = commands.add_parser("db", help="schema: upgrade, data dictionary")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    _command(
        db_commands,
        "upgrade",
        "migrate the database to the newest schema",
        "Create the schema in SYNCD_DATABASE_URL, or migrate it to the newest one; "
        "prints the migrations applied. The database itself (and its user) must exist.",
    )
    dictionary = db_commands.add_parser("dictionary", help="print the data dictionary")
    dictionary.add_argument(
        "--check",
        type=Path,
        metavar="FILE",
        help="exit 1 if FILE differs from the generated dictionary",
    )

    _command(
        commands,
        "serve",
        "run the daemon until SIGTERM",
        "Receive webhooks on http://SYNCD_HOST:SYNCD_PORT/webhooks/shoperti[/STORE], "
        "apply them, and reconcile every SYNCD_RECONCILE_INTERVAL seconds, until "
        "SIGTERM. Refuses to start if the schema is not at head (run `syncd db upgrade`).",
    )
    reconcile = _command(
        commands,
        "reconcile",
        "one reconcile pass now",
        "Ask the API for the events webhooks missed (the first run lists orders and "
        "customers instead), store and apply them, print what was found.",
    )
    reconcile.add_argument("--store", help="store name (default: all stores with an API)")
    backfill = _command(
        commands,
        "backfill",
        "import history from the API",
        "Import orders and customers from the API (all of them, or changed since "
        "--since); resumable: run it again after an interruption.",
    )
    backfill.add_argument("--store", help="store name (default: all stores with an API)")
    backfill.add_argument("--since", type=_date, help="only changes since DATE (ISO 8601)")
    replay = _command(commands, "replay", "rebuild the normalized tables from events")
    replay.add_argument("--store", help="store name (default: all stores)")
    audit = commands.add_parser(
        "audit",
        help="compare the tables with the API's orders and customers",
        description="List the API's orders and customers and compare them with the tables: "
        "missing, stale, different, unknown to the API. Exit status 0 when they agree, 1 when "
        "anything differs. Writes nothing unless --repair.",
    )
    audit.add_argument("--store", help="store name (default: all stores with an API)")
    audit.add_argument("--since", type=_date, help="only objects updated since DATE (ISO 8601)")
    audit.add_argument(
        "--repair",
        action="store_true",
        help="apply the API's copies of what differs (through the inbox), then audit again",
    )
    audit.add_argument("--json", action="store_true", help="print JSON")
    status = _command(
        commands,
        "status",
        "per store: backlog, lag, reconcile state",
        "Per store: last event received and applied, pending/failed/rejected counts, "
        "reconcile cursor and last run, apply lag.\n\nexit status:\n"
        "  0  all is well\n"
        "  1  something needs an operator (failed events, reconcile failing for more\n"
        "     than two intervals), or the database cannot be read\n"
        "  2  invalid settings",
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    _events_parser(commands)
    commands.add_parser("simulator", help="a simulated Shoperti store (see --help)", add_help=False)
    commands.add_parser("bench", help="performance benchmarks (see --help)", add_help=False)
    demo = _command(
        commands,
        "demo",
        "end to end on SQLite with a simulated store",
        "Start a simulated store and the daemon on a SQLite file, sell orders with "
        "some webhooks lost, reconcile, and check that every order arrived. Needs no "
        "settings.",
    )
    demo.add_argument("--dir", type=Path, help="keep the demo database in DIR")
    demo.add_argument("--orders", type=int, default=300, help="orders to sell (default 300)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    return parser


def _events_parser(commands: Any) -> None:
    events = commands.add_parser("events", help="inspect and re-queue events: list, show, retry")
    actions = events.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="events, newest first (never payloads)")
    listing.add_argument("--store", help="store name (default: all stores)")
    listing.add_argument("--status", choices=tuple(EventStatus), help="only events in STATUS")
    listing.add_argument("--type", help="only events of type T (e.g. order.paid)")
    listing.add_argument("--since", type=_date, help="only events received since DATE")
    listing.add_argument("--limit", type=_positive, default=50, help="at most N (default 50)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    show = actions.add_parser("show", help="one event (its payload only with --payload)")
    show.add_argument("id", metavar="ID", help="event id")
    show.add_argument("--store", help="store name (default: look in all stores)")
    show.add_argument("--payload", action="store_true", help="also print the stored payload")
    show.add_argument("--json", action="store_true", help="print JSON")
    retry = actions.add_parser("retry", help="put failed or rejected events back to pending")
    retry.add_argument("--store", help="store name (default: all stores)")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", nargs="+", metavar="ID", help="these events")
    which.add_argument("--status", choices=RETRYABLE, help="every event in STATUS")
    retry.add_argument("--dry-run", action="store_true", help="say how many, change nothing")


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {value!r}")
    return number


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("syncd")
    except PackageNotFoundError:  # a checkout that was never installed
        return "unknown"


def _date(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date: {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _stores(settings: Settings, name: str | None, *, need_api: bool) -> list[StoreConfig]:
    stores = [settings.store(name)] if name is not None else list(settings.stores.values())
    if need_api:
        missing = [s.name for s in stores if not s.has_api]
        if name is not None and missing:
            raise SyncdError(
                f"store {name!r} has no API access: set SYNCD_API_URL and SYNCD_API_KEY"
            )
        stores = [s for s in stores if s.has_api]
        if not stores:
            raise SyncdError("no store has API access: set SYNCD_API_URL and SYNCD_API_KEY")
    return stores


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["simulator"]:
        from syncd.simulator.cli import main as simulator_main

        return simulator_main(args_list[1:])
    if args_list[:1] == ["bench"]:
        from syncd.bench import main as bench_main

        return bench_main(args_list[1:])
    args = _parser().parse_args(args_list)
    from sqlalchemy.exc import SQLAlchemyError

    from syncd.ops import logs, memory

    logs.setup("WARNING" if args.command == "demo" else "INFO")
    database_url: str | None = None
    try:
        if args.command == "demo":
            from syncd.demo import run_demo

            return run_demo(directory=args.dir, orders=args.orders, seed=args.seed)
        settings = load_settings()
        database_url = settings.database_url
        logs.hide(settings.secrets())
        logging.getLogger().setLevel(settings.log_level)
        action = getattr(args, "db_command", None) or getattr(args, "events_command", None)
        handler = HANDLERS[(args.command, action)]
        memory.settle()
        return handler(settings, args)
    except SyncdError as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return 2 if exc.__class__.__name__ == "ConfigError" else 1
    except SQLAlchemyError as exc:
        # Every command's database trouble becomes one line (syncd.db.failures).
        from syncd.db.failures import explain

        print(f"syncd: {explain(exc, database_url or '')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("syncd: interrupted", file=sys.stderr)
        return 130


def _db_upgrade(settings: Settings, _: argparse.Namespace) -> int:
    from syncd.db.engine import head_revision, upgrade

    applied = upgrade(settings.database_url)
    head = head_revision()
    if not applied:
        print(f"nothing to do: the database schema is already at head ({head})")
        return 0
    print(f"applied {len(applied)} migration(s):")
    for revision, message in applied:
        print(f"  {revision}  {message}")
    print(f"the database schema is at head ({head})")
    return 0


def _db_dictionary(_: Settings, args: argparse.Namespace) -> int:
    from syncd.db.dictionary import render

    text = render()
    if args.check is not None:
        if args.check.read_text(encoding="utf-8") != text:
            print(
                f"syncd: {args.check} is out of date: run `syncd db dictionary > {args.check}`",
                file=sys.stderr,
            )
            return 1
        return 0
    sys.stdout.write(text)
    return 0


def _serve(settings: Settings, _: argparse.Namespace) -> int:
    from syncd.db.engine import check_schema_at_head, make_engine
    from syncd.serve import serve

    # The database first: its one-line error must not follow unrelated warnings.
    engine = make_engine(settings.database_url)
    try:
        check_schema_at_head(engine)
    finally:
        engine.dispose()
    _check_port_free(settings.host, settings.port)
    for store in settings.stores.values():
        if not store.has_api:
            log.warning(
                "serve.no_api",
                extra={
                    "store": store.name,
                    "reason": "no SYNCD_API_URL/SYNCD_API_KEY: webhooks are not verified and "
                    "nothing is reconciled",
                },
            )
        if store.webhook_secret is None:
            log.warning(
                "serve.no_webhook_secret",
                extra={
                    "store": store.name,
                    "reason": "no SYNCD_WEBHOOK_SECRET (TOML: webhook_secret): webhooks are "
                    "accepted without a token from anyone who can reach the URL",
                },
            )
    try:
        import uvloop
    except ImportError:  # not on every platform; asyncio's own loop works too
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
    return 0


def _check_port_free(host: str, port: int) -> None:
    """One line instead of uvicorn's log record when the port is taken (a
    check before uvicorn binds with the same options; it cannot rule out a
    race, in which case uvicorn's own error stands)."""
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise SyncdError(f"SYNCD_HOST: cannot resolve {host!r} ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise SyncdError(
                f"cannot listen on {host}:{port} ({exc.strerror}): another process uses "
                "the port, or the address is not this machine's; stop it or set "
                "SYNCD_HOST / SYNCD_PORT"
            ) from None


def _reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from syncd.db.engine import check_schema_at_head, make_engine
    from syncd.reconcile import reconcile_store
    from syncd.shoperti.client import ShopertiClient

    engine = make_engine(settings.database_url)
    check_schema_at_head(engine)
    failed = False

    async def run() -> None:
        nonlocal failed
        for store in _stores(settings, args.store, need_api=True):
            async with ShopertiClient.for_store(store) as client:
                report = await reconcile_store(engine, settings, store, client, apply_now=True)
            if report.mode == "skipped":
                print(f"{store.name}: skipped, another process is reconciling")
            elif report.error:
                failed = True
                print(f"{store.name}: reconcile failed: {report.error}")
            elif report.mode == "resources":
                seen = ", ".join(f"{n} {r}" for r, n in report.resources_seen.items())
                print(
                    f"{store.name}: resource sync since {report.since or 'the beginning'}: "
                    f"{seen} listed, {report.found} new versions"
                )
            else:
                print(
                    f"{store.name}: {report.events_seen} events since {report.since}, "
                    f"{report.found} missed by webhooks and now stored"
                )

    try:
        asyncio.run(run())
    finally:
        engine.dispose()
    return 1 if failed else 0


def _backfill(settings: Settings, args: argparse.Namespace) -> int:
    from syncd.backfill import run_backfill

    status = 0
    for store in _stores(settings, args.store, need_api=True):
        status = max(status, run_backfill(settings, store, since=args.since))
    return status


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from syncd.db.engine import check_schema_at_head, make_engine
    from syncd.replay import replay_store

    engine = make_engine(settings.database_url)
    try:
        check_schema_at_head(engine)
        for store in _stores(settings, args.store, need_api=False):
            report = replay_store(engine, store)
            print(
                f"{store.name}: replayed {report.applied} events, ignored {report.ignored}, "
                f"failed {report.failed}"
            )
    finally:
        engine.dispose()
    return 0


def _audit(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from syncd.audit import audit_store, summary_lines
    from syncd.db.engine import check_schema_at_head, make_engine
    from syncd.ops.progress import ProgressDisplay
    from syncd.shoperti.client import ShopertiClient

    engine = make_engine(settings.database_url)
    check_schema_at_head(engine)
    clean = True
    documents = []

    async def run() -> None:
        nonlocal clean
        for store in _stores(settings, args.store, need_api=True):
            progress = ProgressDisplay(store.name, enabled=not args.json)
            async with ShopertiClient.for_store(store) as client:
                with progress:
                    report = await audit_store(
                        engine,
                        store,
                        client,
                        since=args.since,
                        repair=args.repair,
                        progress=progress,
                    )
            clean = clean and report.clean
            if args.json:
                documents.append(report.to_json())
            else:
                print("\n".join(summary_lines(report)), flush=True)

    try:
        asyncio.run(run())
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps({"clean": clean, "stores": documents}, indent=2))
    return 0 if clean else 1


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from syncd.ops.status import print_status

    return print_status(settings, as_json=args.json)


def _events(settings: Settings, args: argparse.Namespace) -> int:
    from syncd.ops.events import run

    return run(settings, args.events_command, args)


Handler = Callable[[Settings, argparse.Namespace], int]
HANDLERS: dict[tuple[str, str | None], Handler] = {
    ("db", "upgrade"): _db_upgrade,
    ("db", "dictionary"): _db_dictionary,
    ("serve", None): _serve,
    ("reconcile", None): _reconcile,
    ("backfill", None): _backfill,
    ("replay", None): _replay,
    ("status", None): _status,
    ("audit", None): _audit,
    ("events", "list"): _events,
    ("events", "show"): _events,
    ("events", "retry"): _events,
}


if __name__ == "__main__":
    raise SystemExit(main())
