"""``syncd bench``: the numbers behind the performance claims.

In one run, on the configured database (``--database-url``, default a
SQLite file in a temporary directory):

1. **acks**: ``syncd serve`` (a subprocess, as in production) receives N
   unique events POSTed at a fixed concurrency by a lean HTTP/1.1 load
   generator (raw asyncio streams, keep-alive, pre-encoded requests, so the
   generator costs little of the machine's two cores). Reports acks/s,
   p50/p95/p99 ack latency, the time until every event is applied, and the
   CPU time per event of the receiving process and of its apply process
   (steadier than throughput on a shared machine).
2. **bare**: the same load against a Starlette endpoint on the same uvicorn
   settings that answers 200 without touching a database; the ratio
   syncd / bare says what durability costs.
3. **latency at a fixed rate**: p99 at an open-loop rate (e.g. 300 events/s).
   **during a backfill**: the acks' load again, while ``serve``'s first
   reconcile pass imports the ``--orders`` of a simulated store (its apply
   process applies both).
4. **backfill**: M simulated orders imported through the API, orders/s and
   peak RSS, next to the time to just download the pages, and the ratio.
5. **backfill from a realistic API**: the same import from a simulated API
   that answers every request in ``--api-latency`` seconds and refuses (429)
   requests beyond ``--api-allowed`` in flight, with syncd paging at
   ``--api-concurrency`` (default ``SYNCD_API_CONCURRENCY``, else 4). It
   prints syncd's time next to the lower bound, the larger of
   pages * latency / allowed and the zero-latency backfill's time, their
   ratio (bound / time, 1.0 is the best possible) and the share of requests
   refused as busy.
6. **app alone**: syncd's webhook app and the minimal durable receiver
   driven in process through ASGI (no HTTP server, socket or load
   generator), CPU per request: the receiver's own code, steadier than
   the HTTP runs.

The first line times a fixed pure-Python loop, so that figures from two
machines can be compared. Not part of the test run; see README "Performance"
for recorded figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Column, MetaData, String, Table

from syncd.db import dialect
from syncd.db.engine import make_engine, upgrade
from syncd.ops import memory

TOKEN = "bench-token"  # noqa: S105 - a throwaway token for a local benchmark
KEY = "sk_bench"


# --- a lean load generator ------------------------------------------------------------------


@dataclass
class LoadResult:
    sent: int
    ok: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


def _request(host: str, port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def closed_loop(
    port: int, path: str, bodies: Sequence[bytes], concurrency: int
) -> LoadResult:
    """``concurrency`` connections, each sending its next request as soon as
    the previous one is answered."""
    requests = [_request("127.0.0.1", port, path, body) for body in bodies]
    latencies: list[float] = []
    ok = errors = 0
    position = 0

    async def connection() -> None:
        nonlocal ok, errors, position
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while position < len(requests):
                request = requests[position]
                position += 1
                begun = time.perf_counter()
                writer.write(request)
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - begun)
                if 200 <= status < 300:
                    ok += 1
                else:
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return LoadResult(len(requests), ok, errors, time.perf_counter() - started, latencies)


async def open_loop(
    port: int, path: str, bodies: Sequence[bytes], rate: float, connections: int = 64
) -> LoadResult:
    """Requests start on a fixed schedule (``rate`` per second) whatever the
    answers do, over a pool of keep-alive connections; latency is measured
    from the scheduled start, so queueing counts."""
    requests = [_request("127.0.0.1", port, path, body) for body in bodies]
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    ok = errors = 0
    started = time.perf_counter()

    async def one(index: int) -> None:
        nonlocal ok, errors
        due = started + index / rate
        reader, writer = await pool.get()
        writer.write(requests[index])
        status = await _read_response(reader)
        latencies.append(time.perf_counter() - due)
        pool.put_nowait((reader, writer))
        if 200 <= status < 300:
            ok += 1
        else:
            errors += 1

    tasks = []
    for index in range(len(requests)):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - started
    while not pool.empty():
        pool.get_nowait()[1].close()
    return LoadResult(len(requests), ok, errors, seconds, latencies)


# --- servers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError("server did not open its port")


@contextlib.contextmanager
def server(argv: list[str], env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port, process)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bare_app() -> Any:
    """A Starlette endpoint that reads the body and answers 200, nothing else."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def hook(request: Request) -> JSONResponse:
        payload = orjson.loads(await request.body())
        return JSONResponse({"status": "ok", "id": payload.get("id")})

    return Starlette(routes=[Route("/webhooks/shoperti", hook, methods=["POST"])])


def minimal_app(url: str) -> Any:
    """A minimal durable receiver, the bound syncd's receiver is measured
    against: it parses the body, hands it to one writer thread that commits
    whatever has queued up in one transaction (COPY into one table on
    PostgreSQL, one executemany INSERT elsewhere), and answers 200 once its
    event is committed. Nothing else: no auth, no validation beyond an id,
    no metrics, no logging, no ORM."""
    import queue
    import threading

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    queued: queue.SimpleQueue[tuple[str, Any, asyncio.Future[None]]] = queue.SimpleQueue()
    engine = make_engine(url)
    table = Table(
        "bench_minimal",
        MetaData(),
        Column("id", String(64), primary_key=True),
        Column("payload", dialect.json_type()),
    )
    table.drop(engine, checkfirst=True)
    table.create(engine)
    loop: asyncio.AbstractEventLoop | None = None

    def write() -> None:
        with engine.connect() as conn:
            while True:
                batch = [queued.get()]
                while len(batch) < 1000:
                    try:
                        batch.append(queued.get_nowait())
                    except queue.Empty:
                        break
                rows = [{"id": event_id, "payload": payload} for event_id, payload, _ in batch]
                dialect.insert_rows(conn, table, rows)  # COPY on PostgreSQL
                conn.commit()
                assert loop is not None
                for _, _, done in batch:
                    loop.call_soon_threadsafe(done.set_result, None)

    async def hook(request: Request) -> Response:
        nonlocal loop
        if loop is None:
            loop = asyncio.get_running_loop()
            threading.Thread(target=write, daemon=True).start()
        body = await request.body()
        payload = orjson.loads(body)
        if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
            return JSONResponse({"error": "no id"}, status_code=400)
        done: asyncio.Future[None] = loop.create_future()
        queued.put((payload["id"], payload, done))
        await done
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/webhooks/shoperti", hook, methods=["POST"])])


def run_bare(port: int, url: str | None = None) -> None:
    """Serve :func:`bare_app` (or, given a database ``url``, :func:`minimal_app`)
    on the uvicorn settings ``syncd serve`` uses."""
    import uvicorn
    import uvloop

    config = uvicorn.Config(
        bare_app() if url is None else minimal_app(url),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
    )
    uvloop.run(uvicorn.Server(config).serve())


# --- the receiving app alone -----------------------------------------------------------------


def app_alone(url: str, which: str, bodies: Sequence[bytes], concurrency: int) -> float:
    """CPU milliseconds per request of the receiving app alone: syncd's
    (``which="syncd"``: the webhook lane and the group commit, no worker, no
    scheduler) or the minimal durable receiver's, each request handed to the
    app through ASGI in this process, with no HTTP server, socket or load
    generator to share the cores with. The steadiest figure for the
    receiver's own code; what uvicorn adds is the same for both. The first
    200 bodies warm up. Meant to run in a process of its own."""
    import uvloop
    from starlette.types import Message

    reset(url)
    query = b""
    if which == "syncd":
        from syncd.app import create_app
        from syncd.config import load_settings

        settings = load_settings(
            {"SYNCD_DATABASE_URL": url, "SYNCD_WEBHOOK_SECRET": TOKEN, "SYNCD_VERIFY": "off"}
        )
        app = create_app(
            settings,
            make_engine(url),
            run_worker=False,
            run_scheduler=False,
            front_engine=make_engine(url, pool_size=3),
        )
        memory.settle()  # as syncd serve does once its app is built
        query = f"token={TOKEN}".encode()
    else:
        app = minimal_app(url)

    async def post(body: bytes) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/webhooks/shoperti",
            "raw_path": b"/webhooks/shoperti",
            "root_path": "",
            "query_string": query,
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
        statuses: list[int] = []

        async def receive() -> Message:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # no disconnect while the app is at work
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)
        if statuses != [200]:
            raise RuntimeError(f"{which}: answered {statuses}")

    async def load(part: Sequence[bytes]) -> None:
        queued = iter(part)

        async def client() -> None:
            for body in queued:
                await post(body)

        await asyncio.gather(*(client() for _ in range(concurrency)))

    async def run() -> float:
        async with contextlib.AsyncExitStack() as stack:
            if which == "syncd":
                await stack.enter_async_context(app.router.lifespan_context(app))
            await load(bodies[:200])
            started = time.process_time()  # every thread of the process: the writer's too
            await load(bodies[200:])
            return (time.process_time() - started) / len(bodies[200:]) * 1e3

    return uvloop.run(run())


# --- the benchmark ----------------------------------------------------------------------------


def make_events(count: int, seed: int) -> list[bytes]:
    from syncd.simulator import SimulatedStore

    store = SimulatedStore(seed=seed, api_key=KEY)
    orders = max(count // 4, 1)
    bodies: list[bytes] = []
    while len(bodies) < count:
        asyncio.run(store.sell(orders=orders))
        bodies = [orjson.dumps(event) for event in store.events]
    return bodies[:count]


def pending(url: str) -> int:
    from syncd.db.models import Event

    return _count_events(url, Event.status == "pending")


def _count_events(url: str, *where: Any) -> int:
    """Inbox rows that match ``where``, counted on a short-lived engine."""
    from sqlalchemy import func, select

    from syncd.db.models import Event

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(Event).where(*where)) or 0)
    finally:
        engine.dispose()


def reset(url: str) -> None:
    from syncd.db.models import metadata

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())
    finally:
        engine.dispose()


@dataclass
class Acks:
    """One closed-loop load at one concurrency, and the CPU it cost per event."""

    load: LoadResult
    cpu_ms: float  # of the receiving process
    apply_cpu_ms: float = 0.0  # of syncd's apply process


def _measure(
    port: int, path: str, bodies: Sequence[bytes], concurrency: int, pids: set[int], apply: set[int]
) -> Acks:
    receiver, applier = cpu_seconds(pids), cpu_seconds(apply)
    load = asyncio.run(closed_loop(port, path, bodies, concurrency))
    return Acks(
        load,
        (cpu_seconds(pids) - receiver) / len(bodies) * 1e3,
        (cpu_seconds(apply) - applier) / len(bodies) * 1e3,
    )


def bench_acks(
    url: str, bodies: list[bytes], concurrencies: Sequence[int], rate: float
) -> dict[str, Any]:
    """syncd, the minimal durable receiver and the bare endpoint, each at every
    concurrency (a fresh share of the events each time), then syncd at a fixed
    rate."""
    port = free_port()
    env = {
        "SYNCD_DATABASE_URL": url,
        "SYNCD_PORT": str(port),
        "SYNCD_WEBHOOK_SECRET": TOKEN,
        "SYNCD_RECONCILE_INTERVAL": "0",
        "SYNCD_VERIFY": "off",
    }
    path = f"/webhooks/shoperti?token={TOKEN}"
    warm, rest = bodies[:200], bodies[200:]
    share = len(rest) // len(concurrencies)
    shares = {c: rest[i * share : (i + 1) * share] for i, c in enumerate(concurrencies)}
    results: dict[str, Any] = {"syncd": {}, "minimal": {}, "bare": {}}
    reset(url)
    with server([sys.executable, "-m", "syncd", "serve"], env, port) as serving:
        assert asyncio.run(closed_loop(port, path, warm, 32)).errors == 0, "warm-up failed"
        apply_pids = process_tree(serving.pid) - {serving.pid}
        for c in concurrencies:
            results["syncd"][c] = _measure(port, path, shares[c], c, {serving.pid}, apply_pids)
        last_ack = time.perf_counter()
        while pending(url):
            time.sleep(0.05)
        results["applied_after_last_ack_s"] = time.perf_counter() - last_ack
    reset(url)
    with server([sys.executable, "-m", "syncd", "serve"], env, port):
        steady = rest[: max(int(rate * 10), 200)]
        results["fixed_rate"] = asyncio.run(open_loop(port, path, steady, rate))
        last_ack = time.perf_counter()
        while pending(url):
            time.sleep(0.05)
        results["fixed_rate_applied_after_last_ack_s"] = time.perf_counter() - last_ack
    for name, database in (("minimal", repr(url)), ("bare", "None")):
        other = free_port()
        code = f"from syncd.bench import run_bare; run_bare({other}, {database})"
        with server([sys.executable, "-c", code], {}, other) as baseline:
            hook = "/webhooks/shoperti"
            asyncio.run(closed_loop(other, hook, warm, 32))
            for c in concurrencies:
                results[name][c] = _measure(other, hook, shares[c], c, {baseline.pid}, set())
    engine = make_engine(url)
    with engine.begin() as conn:  # the minimal receiver's table is not syncd's
        conn.exec_driver_sql("DROP TABLE IF EXISTS bench_minimal")
    engine.dispose()
    return results


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not getrusage's ru_maxrss: that one
    survives exec, so a child would report the parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_backfill(
    url: str,
    orders: int,
    seed: int,
    *,
    api_latency: float = 0.0,
    api_allowed: int = 0,
    api_concurrency: int = 4,
) -> dict[str, Any]:
    """Runs in a child process so its peak RSS is its own; the simulated store
    runs in a process of its own too (``syncd simulator``). With an
    ``api_latency`` the download-only pass is skipped (it would read the pages
    one by one at that latency) and the API's answers are counted instead."""
    from syncd.config import load_settings
    from syncd.reconcile import sync_resource
    from syncd.shoperti.client import ShopertiClient

    answers: dict[str, int] = {}

    def tally(endpoint: str, outcome: int | str) -> None:
        answers[str(outcome)] = answers.get(str(outcome), 0) + 1

    downloaded, download_s = 0, float("nan")
    with simulated_api(orders, seed, api_latency, api_allowed) as api_url:
        rss_before = _rss_now_mb()

        async def download() -> int:
            count = 0
            async with ShopertiClient(api_url, KEY) as client:
                async for page in client.pages("orders", since=None):
                    count += len(page.items)
            return count

        if not api_latency:
            started = time.perf_counter()
            downloaded = asyncio.run(download())
            download_s = time.perf_counter() - started
        reset(url)
        settings = load_settings(
            {
                "SYNCD_DATABASE_URL": url,
                "SYNCD_API_URL": api_url,
                "SYNCD_API_KEY": KEY,
                "SYNCD_API_CONCURRENCY": str(api_concurrency),
            }
        )
        engine = make_engine(url)
        memory.settle()  # as the CLI does before a command

        async def backfill() -> tuple[int, int]:
            async with ShopertiClient(api_url, KEY, on_response=tally) as client:
                return await sync_resource(engine, settings.store(), client, "orders", None)

        started = time.perf_counter()
        seen, _ = asyncio.run(backfill())
        backfill_s = time.perf_counter() - started
        engine.dispose()
    return {
        "orders": seen,
        "downloaded": downloaded,
        "download_s": download_s,
        "backfill_s": backfill_s,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "answers": answers,
    }


@contextlib.contextmanager
def simulated_api(
    orders: int, seed: int, api_latency: float = 0.0, api_allowed: int = 0
) -> Iterator[str]:
    """``syncd simulator`` in a process of its own with ``orders`` of history;
    yields its API URL."""
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "syncd",
            "simulator",
            "--api-key",
            KEY,
            "--seed",
            str(seed),
            "--orders",
            "0",
            "--history-orders",
            str(orders),
            "--history-days",
            "365",
            "--api-latency",
            str(api_latency),
            "--api-max-concurrent",
            str(api_allowed),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert simulator.stdout is not None
        first = simulator.stdout.readline().strip()
        if not first.startswith("api_url="):
            raise RuntimeError(f"the simulator did not start: {first!r}")
        yield first.removeprefix("api_url=")
    finally:
        simulator.send_signal(signal.SIGTERM)
        simulator.wait(30)
        if simulator.stdout is not None:
            simulator.stdout.close()


def bench_acks_during_backfill(
    url: str, bodies: list[bytes], concurrency: int, orders: int, seed: int
) -> dict[str, Any]:
    """Acks/s of ``syncd serve`` while its first reconcile pass (no cursor
    yet: a resource sync, as a backfill) imports ``orders`` from the API."""
    port = free_port()
    path = f"/webhooks/shoperti?token={TOKEN}"
    reset(url)
    with simulated_api(orders, seed) as api_url:
        env = {
            "SYNCD_DATABASE_URL": url,
            "SYNCD_PORT": str(port),
            "SYNCD_WEBHOOK_SECRET": TOKEN,
            "SYNCD_VERIFY": "off",
            "SYNCD_API_URL": api_url,
            "SYNCD_API_KEY": KEY,
            "SYNCD_RECONCILE_INTERVAL": "3600",  # the first pass starts at once
        }
        with server([sys.executable, "-m", "syncd", "serve"], env, port):
            deadline = time.monotonic() + 60
            while _backfilled(url) == 0:  # wait until the import is under way
                if time.monotonic() > deadline:
                    raise TimeoutError("the first reconcile pass did not start")
                time.sleep(0.05)
            load = asyncio.run(closed_loop(port, path, bodies, concurrency))
            at_end = _backfilled(url)
    return {"acks": load, "backfilled_at_end": at_end}


def _backfilled(url: str) -> int:
    """Orders in the inbox from the resource sync so far."""
    from syncd.db.models import Event

    return _count_events(url, Event.source == "backfill", Event.type.like("order%"))


def _child(url: str, args: argparse.Namespace, *flags: str) -> dict[str, Any]:
    """``syncd bench`` run again in a process of its own (so that its RSS
    and CPU are its own) with ``flags``; its last line, as JSON."""
    command = [sys.executable, "-m", "syncd", "bench", "--seed", str(args.seed)]
    child = subprocess.run(
        [*command, "--database-url", url, *flags],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = orjson.loads(child.stdout.strip().splitlines()[-1])
    return result


def _backfill_child(url: str, args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    return _child(
        url,
        args,
        "--backfill-child",
        "--orders",
        str(args.orders),
        "--api-concurrency",
        str(args.api_concurrency),
        *extra,
    )


def _app_alone_child(url: str, args: argparse.Namespace, which: str, concurrency: int) -> float:
    flags = ("--app-alone-child", which, "--events", str(args.events))
    return float(_child(url, args, *flags, "--concurrency", str(concurrency))["cpu_ms"])


def process_tree(pid: int) -> set[int]:
    """``pid`` and its descendants (Linux /proc)."""
    found = {pid}
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found |= process_tree(int(child))
    return found


def cpu_seconds(pids: set[int]) -> float:
    """User + system CPU time used so far by ``pids`` (those still running)."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def reference_loop_s() -> float:
    """Seconds for a fixed pure-Python loop: how fast this machine runs
    Python, to compare figures taken on different machines."""
    started = time.perf_counter()
    total = 0
    for number in range(10_000_000):
        total += number
    return time.perf_counter() - started


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv: Sequence[str] | None = None) -> int:
    from syncd.simulator.cli import DefaultsHelpFormatter

    parser = argparse.ArgumentParser(
        prog="syncd bench",
        description="The numbers behind the performance claims: durable acks from "
        "`syncd serve` under load, the same load on a bare endpoint, ack latency at a "
        "fixed rate, and a backfill of simulated orders. Prints figures; not a test. "
        "See README.md, Performance.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="database to measure, as SYNCD_DATABASE_URL (default: SQLite in a temporary "
        "directory)",
    )
    parser.add_argument(
        "--events", type=int, default=10_000, help="events to POST per concurrency for the acks"
    )
    parser.add_argument(
        "--concurrency",
        default="32,128",
        help="requests in flight during the acks: one run per value, comma-separated",
    )
    parser.add_argument(
        "--rate", type=float, default=300.0, help="events/s of the fixed-rate latency run"
    )
    parser.add_argument("--orders", type=int, default=20_000, help="orders to backfill")
    parser.add_argument("--seed", type=int, default=3, help="random seed of the simulated store")
    parser.add_argument("--skip-acks", action="store_true", help="skip the ack and latency runs")
    parser.add_argument("--skip-backfill", action="store_true", help="skip the backfill runs")
    parser.add_argument(
        "--api-latency",
        type=float,
        default=0.2,
        metavar="SECONDS",
        help="realistic backfill: how long the API takes to answer; 0 skips that run",
    )
    parser.add_argument(
        "--api-allowed",
        type=int,
        default=8,
        metavar="N",
        help="realistic backfill: requests in flight the API allows (429 beyond)",
    )
    parser.add_argument(
        "--api-concurrency",
        type=int,
        default=int(os.environ.get("SYNCD_API_CONCURRENCY") or 4),
        metavar="N",
        help="syncd's API requests in flight while paging (default: SYNCD_API_CONCURRENCY, else 4)",
    )
    parser.add_argument("--backfill-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-api-latency", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--child-api-allowed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--app-alone-child", choices=("syncd", "minimal"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        if args.backfill_child:
            result = bench_backfill(
                url,
                args.orders,
                args.seed,
                api_latency=args.child_api_latency,
                api_allowed=args.child_api_allowed,
                api_concurrency=args.api_concurrency,
            )
            print(orjson.dumps(result).decode())
            return 0
        if args.app_alone_child:
            bodies = make_events(args.events + 200, args.seed)
            cpu_ms = app_alone(url, args.app_alone_child, bodies, int(args.concurrency))
            print(orjson.dumps({"cpu_ms": cpu_ms}).decode())
            return 0
        upgrade(url)
        print(
            f"syncd bench on {url.split('@')[-1]} — {os.cpu_count()} cores, "
            f"Python {sys.version.split()[0]}, reference loop {reference_loop_s():.2f} s "
            "(10M additions; lower is a faster machine)",
            flush=True,
        )
        if not args.skip_acks:
            concurrencies = [int(c) for c in args.concurrency.split(",")]
            bodies = make_events(args.events * len(concurrencies) + 200, args.seed)
            r = bench_acks(url, bodies, concurrencies, args.rate)
            print_acks(r, concurrencies)
            for c in concurrencies:
                ours = _app_alone_child(url, args, "syncd", c)
                minimal = _app_alone_child(url, args, "minimal", c)
                print(
                    f"app alone concurrency {c}, in process (no HTTP server, no load generator): "
                    f"syncd {ours:.3f} ms, minimal {minimal:.3f} ms of CPU per request; "
                    f"syncd/minimal = {ours / minimal:.2f}",
                    flush=True,
                )
            fixed = r["fixed_rate"]
            print(
                f"fixed     {fixed.ok} events at {args.rate:.0f}/s: p50 "
                f"{fixed.percentile(50):.1f} ms, p99 {fixed.percentile(99):.1f} ms, errors "
                f"{fixed.errors}; applied {r['fixed_rate_applied_after_last_ack_s']:.2f} s "
                "after the last ack"
            )
            acks = r["syncd"][concurrencies[0]].load
            d = bench_acks_during_backfill(
                url, bodies[200 : 200 + args.events], concurrencies[0], args.orders, args.seed
            )
            during = d["acks"]
            print(
                f"during    the same load while serve's first reconcile imports {args.orders} "
                f"orders: {during.rate:,.0f} acks/s ({during.rate / acks.rate:.2f} of alone), "
                f"p99 {during.percentile(99):.1f} ms, errors {during.errors}; "
                f"{d['backfilled_at_end']} orders imported at the last ack"
                + (
                    " (the import outlasted the load)"
                    if d["backfilled_at_end"] < args.orders
                    else ""
                ),
                flush=True,
            )
        if not args.skip_backfill:
            b = _backfill_child(url, args)
            print(
                f"backfill  {b['orders']} orders: {b['orders'] / b['backfill_s']:,.0f} "
                f"orders/s ({b['backfill_s']:.1f} s); download only "
                f"{b['downloaded'] / b['download_s']:,.0f} orders/s; ratio "
                f"{b['download_s'] / b['backfill_s']:.2f}; peak RSS {b['peak_rss_mb']:.0f} MB "
                f"(at start {b['rss_before_mb']:.0f} MB); API concurrency "
                f"{args.api_concurrency}",
                flush=True,
            )
            if args.api_latency > 0:
                print_realistic(args, b, _backfill_child(url, args, *realistic_flags(args)))
    return 0


def print_acks(r: dict[str, Any], concurrencies: Sequence[int]) -> None:
    for c in concurrencies:
        ours, minimal, bare = r["syncd"][c], r["minimal"][c], r["bare"][c]
        load = ours.load
        print(
            f"acks      {load.ok} events, concurrency {c}: {load.rate:,.0f} acks/s, "
            f"p50 {load.percentile(50):.1f} ms, p95 {load.percentile(95):.1f} ms, "
            f"p99 {load.percentile(99):.1f} ms, errors {load.errors}; CPU per event: "
            f"receiver {ours.cpu_ms:.3f} ms, apply process {ours.apply_cpu_ms:.3f} ms"
        )
        print(
            f"minimal   durable receiver, concurrency {c}: {minimal.load.rate:,.0f} acks/s, "
            f"p99 {minimal.load.percentile(99):.1f} ms, CPU {minimal.cpu_ms:.3f} ms/event; "
            f"syncd/minimal = {load.rate / minimal.load.rate:.2f} (target >= 1)"
        )
        print(
            f"bare      concurrency {c}: {bare.load.rate:,.0f} req/s, CPU "
            f"{bare.cpu_ms:.3f} ms/request; syncd/bare = {load.rate / bare.load.rate:.2f}; "
            f"receiver CPU / bare CPU = {ours.cpu_ms / bare.cpu_ms:.2f} (target <= 2.5)"
        )
    print(f"applied   all events applied {r['applied_after_last_ack_s']:.2f} s after the last ack")


def realistic_flags(args: argparse.Namespace) -> list[str]:
    return [
        "--child-api-latency",
        str(args.api_latency),
        "--child-api-allowed",
        str(args.api_allowed),
    ]


def print_realistic(args: argparse.Namespace, zero: dict[str, Any], real: dict[str, Any]) -> None:
    answers: dict[str, int] = real["answers"]
    pages = answers.get("200", 0)
    requests = sum(answers.values())
    busy = answers.get("429", 0)
    api_bound = pages * args.api_latency / args.api_allowed
    bound = max(api_bound, zero["backfill_s"])
    seconds = real["backfill_s"]
    print(
        f"realistic {real['orders']} orders from an API answering in "
        f"{args.api_latency * 1000:.0f} ms, {args.api_allowed} requests allowed in flight, "
        f"syncd API concurrency {args.api_concurrency}: {seconds:.1f} s "
        f"({real['orders'] / seconds:,.0f} orders/s); lower bound {bound:.1f} s = max("
        f"{pages} pages x {args.api_latency:g} s / {args.api_allowed} = {api_bound:.1f} s, "
        f"zero-latency backfill {zero['backfill_s']:.1f} s); bound/time = "
        f"{bound / seconds:.2f} (target >= 0.8); refused as busy {busy} of {requests} "
        f"requests ({100 * busy / max(requests, 1):.2f} %, target < 1 %)",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
