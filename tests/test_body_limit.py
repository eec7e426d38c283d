"""A body over SYNCD_MAX_BODY_BYTES from a plain client: the sender reads the 413.

Python's urllib (and many webhook senders) write the whole body before they
read the answer and never send ``Expect: 100-continue``. If the server
answered and closed with the body unread, the sender would get a connection
reset instead of the 413; syncd reads and drops the rest of such a body (up
to a bound) before answering. Real server, real sockets.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import pytest

from syncd.receiver import DRAIN_FACTOR
from tests.factories import order_event
from tests.support import daemon, stored

MB = 1_000_000
DEFAULT_LIMIT = 1_048_576


def event_of(size: int) -> bytes:
    skeleton = json.dumps(order_event("evt_big", note="")).encode()
    return json.dumps(order_event("evt_big", note="x" * (size - len(skeleton)))).encode()


@pytest.mark.parametrize("megabytes", [3, 8])
def test_urllib_reads_the_413_for_a_body_sent_all_at_once(sqlite_db: Any, megabytes: int) -> None:
    data = event_of(megabytes * MB)
    with daemon(sqlite_db.url, sqlite_db.engine, run_worker=False) as client:
        url = str(client.base_url.join("/webhooks/shoperti"))
        for _ in range(3):
            request = urllib.request.Request(url, data=data, method="POST")
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(request, timeout=30)
            assert caught.value.code == 413
            reason = json.loads(caught.value.read())["error"]
            assert reason == f"body larger than {DEFAULT_LIMIT} bytes"
    assert stored(sqlite_db.engine) == []


def test_a_raw_socket_sending_the_whole_body_first_reads_the_413(sqlite_db: Any) -> None:
    data = event_of(8 * MB)
    with daemon(sqlite_db.url, sqlite_db.engine, run_worker=False) as client:
        address = urlsplit(str(client.base_url))
        with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
            head = (
                "POST /webhooks/shoperti HTTP/1.1\r\nHost: x\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
            )
            sock.sendall(head.encode() + data)  # all of it, before reading anything
            answer = b""
            deadline = time.monotonic() + 30
            while b"}" not in answer and time.monotonic() < deadline:
                got = sock.recv(65536)
                if not got:
                    break
                answer += got
            assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
            assert b'{"error":"body larger than' in answer
            # The body was read to its end: the connection still serves a request.
            small = json.dumps(order_event("evt_small")).encode()
            sock.sendall(
                b"POST /webhooks/shoperti HTTP/1.1\r\nHost: x\r\n"
                + f"Content-Length: {len(small)}\r\n\r\n".encode()
                + small
            )
            second = b""
            while b"}" not in second and time.monotonic() < deadline:
                got = sock.recv(65536)
                if not got:
                    break
                second += got
            assert second.startswith(b"HTTP/1.1 200 "), second[:200]
    assert [row["id"] for row in stored(sqlite_db.engine)] == ["evt_small"]


def test_a_body_past_the_drain_bound_is_refused_without_reading_it(sqlite_db: Any) -> None:
    limit = 4096
    with daemon(
        sqlite_db.url, sqlite_db.engine, run_worker=False, SYNCD_MAX_BODY_BYTES=str(limit)
    ) as client:
        address = urlsplit(str(client.base_url))
        with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
            announced = limit * DRAIN_FACTOR + 1
            sock.sendall(
                b"POST /webhooks/shoperti HTTP/1.1\r\nHost: x\r\n"
                + f"Content-Length: {announced}\r\n\r\n".encode()
            )
            started = time.monotonic()
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
            assert time.monotonic() - started < 5  # answered at once, nothing waited for
