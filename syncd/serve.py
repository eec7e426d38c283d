"""``syncd serve``: uvicorn started from code, with the daemon's lifespan.

On SIGTERM uvicorn stops accepting, finishes in-flight requests (for at most
``SYNCD_SHUTDOWN_GRACE`` seconds), then the lifespan stops the scheduler,
flushes the inbox writer and lets the worker finish its batch.
"""

from __future__ import annotations

import logging
import socket

import uvicorn

from syncd.app import create_app
from syncd.config import Settings
from syncd.db.engine import check_schema_at_head, make_engine
from syncd.ops import systemd

log = logging.getLogger("syncd.serve")


class _Server(uvicorn.Server):
    """Tells systemd we are ready once the socket is bound and the lifespan ran."""

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            systemd.notify("READY=1\nSTATUS=receiving webhooks")
            log.info(
                "serve.ready",
                extra={
                    "host": self.settings.host,
                    "port": self.settings.port,
                    "stores": sorted(self.settings.stores),
                },
            )


async def serve(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    try:
        check_schema_at_head(engine)
        app = create_app(settings, engine)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=max(int(settings.shutdown_grace), 1),
            server_header=False,
        )
        server = _Server(config, settings)
        try:
            await server.serve()
        finally:
            systemd.notify("STOPPING=1")
    finally:
        engine.dispose()
    if not server.started:
        raise SystemExit(1)
