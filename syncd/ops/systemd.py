"""sd_notify(3) in a few lines of stdlib: ``READY=1``, ``STOPPING=1``, ``STATUS=…``.

A no-op when ``$NOTIFY_SOCKET`` is unset (not started by systemd). It must
never stop the daemon: a socket that is gone or refuses is logged once per
call and ignored, because the service works the same without the notices.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("syncd.systemd")


def notify(state: str) -> bool:
    """Send ``state`` (``KEY=value`` lines) to systemd; True when it was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    elif not address.startswith("/"):  # e.g. vsock:…, which this daemon never gets
        log.warning("systemd.notify_unsupported", extra={"reason": "NOTIFY_SOCKET not a path"})
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("systemd.notify_failed", extra={"error": type(exc).__name__})
        return False
    return True
