"""The files in deploy/, run for real.

- the systemd unit: ``systemd-analyze verify`` without a single warning,
  ``systemd-analyze security --offline=true`` at 1.5 or lower, and the
  settings the daemon depends on (notify, credentials, upgrade before start);
- the example settings load, and cover every variable syncd reads;
- the SQL that creates the database and the read-only BI login, on real
  PostgreSQL and MariaDB servers: the login reads every table and writes none;
- the nginx snippet, in a real nginx with TLS in front of a running syncd.

Tools that are missing (systemd-analyze, nginx, openssl, psql, mysql) skip
their test with the reason; under ``CI=true`` they fail it (.ci/run installs
them).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import orjson
import psycopg
import pymysql
import pytest
from sqlalchemy import select
from starlette.applications import Starlette

from syncd.app import create_app
from syncd.config import Settings, load_settings
from syncd.connections import connection_cap
from syncd.db.engine import make_engine, upgrade
from syncd.db.models import Event, metadata
from tests.support import REPO, free_port, serving, wait_for

DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "syncd.service"
GUIDE = REPO / "docs" / "deploy.md"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_HOST, PG_PORT, PG_ADMIN = "127.0.0.1", 5432, "postgres"
MY_HOST, MY_PORT, MY_ADMIN = "127.0.0.1", 3306, "root"
SYNCD_TABLES = sorted(table.name for table in metadata.sorted_tables)


def unavailable(message: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(f"!!! SKIPPED: {message}")


def need(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        unavailable(f"{tool} is not installed")
    return path


def run(
    *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )


def unit_settings(path: Path = UNIT) -> dict[str, list[str]]:
    """``Section.Key`` -> every value assigned, in order (systemd's repeatable keys)."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


# --- the systemd unit ----------------------------------------------------------------


@pytest.fixture
def unit_root(tmp_path: Path) -> Path:
    """A root directory with the system's units, the unit under test, and a
    stand-in for the installed /usr/local/bin/syncd (verify checks it exists)."""
    root = tmp_path / "root"
    for candidate in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if candidate.is_dir():
            shutil.copytree(candidate, root / "usr/lib/systemd/system", symlinks=True)
            break
    else:
        pytest.fail("no systemd unit directory on this machine", pytrace=False)
    binary = root / "usr/local/bin/syncd"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    return root


def verify_in(root: Path, unit_text: str) -> subprocess.CompletedProcess[str]:
    (root / "etc/systemd/system/syncd.service").write_text(unit_text)
    return run(need("systemd-analyze"), "verify", f"--root={root}", "syncd.service")


def test_unit_verifies_without_a_warning(unit_root: Path) -> None:
    result = verify_in(unit_root, UNIT.read_text())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr
    # The same check sees a broken copy: warnings are not lost somewhere.
    broken = verify_in(unit_root, UNIT.read_text().replace("Type=notify", "Type=notfy"))
    assert "notfy" in broken.stderr
    (unit_root / "usr/local/bin/syncd").unlink()
    missing = verify_in(unit_root, UNIT.read_text())
    assert missing.returncode != 0 and "/usr/local/bin/syncd" in missing.stderr


def test_unit_security_exposure_is_at_most_1_5() -> None:
    result = run(need("systemd-analyze"), "security", "--offline=true", str(UNIT))
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for syncd\.service: (\d+\.\d+)", result.stdout)
    assert match is not None, result.stdout[-500:]
    score = float(match.group(1))
    print(f"systemd-analyze security: exposure {score}")
    assert score <= 1.5, result.stdout


def test_unit_runs_upgrade_then_serve_with_credentials_and_a_long_enough_stop(
    tmp_path: Path,
) -> None:
    unit = unit_settings()
    one = {key: values[-1] for key, values in unit.items()}
    assert one["Service.Type"] == "notify" and one["Service.NotifyAccess"] == "main"
    assert one["Service.User"] not in ("", "root", "0")
    assert one["Service.Restart"] == "on-failure"
    binary = "/usr/local/bin/syncd"
    assert unit["Service.ExecStartPre"] == [f"{binary} db upgrade"]
    assert unit["Service.ExecStart"] == [f"{binary} serve"]
    assert f"ln -sf /opt/syncd/venv/bin/syncd {binary}" in GUIDE.read_text()
    assert one["Service.StateDirectory"] == "syncd"
    assert "SYNCD_DATABASE_URL=sqlite:////var/lib/syncd/syncd.db" in unit["Service.Environment"]
    assert one["Service.EnvironmentFile"] == "-/etc/syncd/syncd.env"
    # SIGKILL must not cut short a shutdown that stays within the grace.
    stop = float(one["Service.TimeoutStopSec"].rstrip("s"))
    assert stop >= Settings().shutdown_grace + 15

    # The credential names are the ones syncd reads from $CREDENTIALS_DIRECTORY.
    credentials = dict(value.split(":", 1) for value in unit["Service.LoadCredential"])
    assert credentials == {
        "api_key": "/etc/syncd/api_key",
        "webhook_secret": "/etc/syncd/webhook_secret",
    }
    for name in credentials:
        (tmp_path / name).write_text(f"{name}-value-123\n")
    settings = load_settings(
        {"CREDENTIALS_DIRECTORY": str(tmp_path), "SYNCD_API_URL": "https://api.example/v1"}
    )
    store = settings.store()
    assert store.api_key is not None and store.api_key.reveal() == "api_key-value-123"
    assert store.webhook_secret is not None
    assert store.webhook_secret.reveal() == "webhook_secret-value-123"


def test_unit_sets_an_open_file_limit_that_syncd_cannot_raise_itself() -> None:
    """systemd's default soft limit is 1,024 open files, and the unit's
    ``SystemCallFilter=~@resources`` forbids setrlimit: the unit must set it."""
    unit = unit_settings()
    assert any("@resources" in value for value in unit["Service.SystemCallFilter"])
    values = unit.get("Service.LimitNOFILE", [])
    assert len(values) == 1, "the unit sets no LimitNOFILE"
    soft, _, hard = values[0].partition(":")
    assert int(soft) >= 16384 and int(hard or soft) >= int(soft)
    # What syncd then holds in client connections before it sheds idle ones.
    assert connection_cap(int(soft)) >= 16000


# --- example settings ------------------------------------------------------------------


def variables_syncd_reads() -> set[str]:
    source = (REPO / "syncd" / "config.py").read_text()
    names = set(re.findall(r'"(SYNCD_[A-Z_]+)"', source))
    secrets = set(re.findall(r'secret\("(SYNCD_[A-Z_]+)"', source))
    return names | {f"{name}_FILE" for name in secrets}


def test_env_example_names_every_variable_and_its_values_load(tmp_path: Path) -> None:
    text = (DEPLOY / "syncd.env.example").read_text()
    wanted = variables_syncd_reads()
    assert {"SYNCD_DATABASE_URL", "SYNCD_SHUTDOWN_GRACE", "SYNCD_API_KEY_FILE"} <= wanted
    missing = [name for name in sorted(wanted) if not re.search(rf"^#?{name}=", text, re.M)]
    assert missing == []

    (tmp_path / "api_key").write_text("key-1234567\n")
    base = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    active = dict(re.findall(r"^(SYNCD_[A-Z_]+)=(.*)$", text, re.M))
    settings = load_settings({**base, **active})  # as the unit would, with its credential
    assert settings.store().has_api and settings.store().verify == "api"

    numbers = re.findall(r"^#(SYNCD_[A-Z_]+)=(\d+)$", text, re.M)
    assert len(numbers) >= 9
    for name, value in numbers:
        # A commented number is the default: uncommenting it changes nothing.
        assert load_settings({**base, **active, name: value}) == settings, name


def test_stores_example_loads_two_stores(tmp_path: Path) -> None:
    credentials = "/run/credentials/syncd.service/"
    text = (DEPLOY / "stores.toml.example").read_text()
    files = re.findall(r'_file = "' + re.escape(credentials) + r'([\w.-]+)"', text)
    assert len(files) == 4
    for name in files:
        (tmp_path / name).write_text(f"{name}-secret\n")
    config = tmp_path / "stores.toml"
    config.write_text(text.replace(credentials, f"{tmp_path}/"))
    settings = load_settings({"SYNCD_CONFIG": str(config)})
    assert sorted(settings.stores) == ["mx-main", "outlet"]
    for store in settings.stores.values():
        assert store.has_api and store.verify == "api" and store.webhook_secret is not None


def test_guide_shows_the_sql_files_as_they_are() -> None:
    guide = GUIDE.read_text()
    for path in sorted(DEPLOY.glob("*.sql")):
        assert f"-- deploy/{path.name}\n{path.read_text()}" in guide, path.name


# --- the database and the read-only BI login --------------------------------------------


def _unique(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def test_postgresql_database_owner_and_read_only_bi_login() -> None:
    """The SQL files as the guide runs them (psql, variables on the command line).
    The test server trusts local logins, so passwords go unchecked here: what is
    checked is what each login may do."""
    psql = need("psql")
    db, owner, bi = _unique("syncd_deploy"), _unique("syncd_owner"), _unique("syncd_bi")
    admin = ["-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_ADMIN, "-v", "ON_ERROR_STOP=1", "-q"]
    probe = run(psql, *admin, "-d", "postgres", "-c", "select 1")
    if probe.returncode != 0:
        unavailable(f"PostgreSQL does not answer: {probe.stderr.strip()}")
    try:
        created = run(
            psql, *admin, "-d", "postgres", "-v", f"db={db}", "-v", f"owner={owner}",
            "-v", "owner_password=owner-pw-1", "-f", str(DEPLOY / "create-database-postgresql.sql"),
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        upgrade(f"postgresql://{owner}:owner-pw-1@{PG_HOST}:{PG_PORT}/{db}")
        granted = run(
            psql, *admin, "-d", db, "-v", f"owner={owner}", "-v", f"bi_user={bi}",
            "-v", "bi_password=bi-pw-1", "-f", str(DEPLOY / "bi-readonly-postgresql.sql"),
        )  # fmt: skip
        assert granted.returncode == 0, granted.stderr
        as_owner = f"host={PG_HOST} port={PG_PORT} dbname={db} user={owner}"
        with psycopg.connect(as_owner, autocommit=True) as conn:
            # A table a later migration adds is readable without granting again.
            conn.execute("CREATE TABLE later_table (id integer)")
            tables = [
                row[0]
                for row in conn.execute(
                    "select tablename from pg_tables where schemaname = 'public'"
                )
            ]
        assert set(SYNCD_TABLES) | {"alembic_version", "later_table"} <= set(tables)

        as_bi = f"host={PG_HOST} port={PG_PORT} dbname={db} user={bi}"
        with psycopg.connect(as_bi, autocommit=True) as conn:
            for table in tables:
                conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("DELETE FROM events")
            # Read-only sessions are only the first wall; the grants are the real one.
            conn.execute("SET default_transaction_read_only = off")
            writes = [
                "INSERT INTO sync_state (store, name, value, updated_at) "
                "VALUES ('s', 'n', '{}', now())",
                "UPDATE orders SET note = 'x'",
                "DELETE FROM events",
                "TRUNCATE customers",
                "CREATE TABLE mine (id integer)",
                "DROP TABLE later_table",
            ]
            for statement in writes:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
    finally:
        run(psql, *admin, "-d", "postgres", "-c", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        run(psql, *admin, "-d", "postgres", "-c", f'DROP ROLE IF EXISTS "{bi}", "{owner}"')


def test_mariadb_database_owner_and_read_only_bi_login() -> None:
    """The SQL files with only names and passwords changed, through the mysql client."""
    client = need("mysql")
    db, owner, bi = _unique("syncd_deploy"), _unique("syncd_o"), _unique("syncd_bi")
    admin = ["-h", MY_HOST, "-P", str(MY_PORT), "-u", MY_ADMIN]
    probe = run(client, *admin, "-e", "select 1")
    if probe.returncode != 0:
        unavailable(f"MariaDB does not answer: {probe.stderr.strip()}")
    names = {
        "`syncd`": f"`{db}`",
        "'syncd'@": f"'{owner}'@",
        "'syncd_bi'@": f"'{bi}'@",
        "CHANGE-ME-syncd": "owner-pw-1",
        "CHANGE-ME-bi": "bi-pw-1",
    }

    def rendered(name: str) -> str:
        text = (DEPLOY / name).read_text()
        for old, new in names.items():
            text = text.replace(old, new)
        return text

    try:
        for name in ("create-database-mariadb.sql", "bi-readonly-mariadb.sql"):
            text = (DEPLOY / name).read_text()
            assert sum(old in text for old in names) >= 2, f"{name} changed shape"
            if name.startswith("bi-"):
                upgrade(f"mysql://{owner}:owner-pw-1@{MY_HOST}:{MY_PORT}/{db}")
            done = run(client, *admin, stdin=rendered(name))
            assert done.returncode == 0, done.stderr

        def connect(user: str, password: str) -> pymysql.Connection[pymysql.cursors.Cursor]:
            return pymysql.connect(
                host=MY_HOST, port=MY_PORT, user=user, password=password, database=db,
                autocommit=True,
            )  # fmt: skip

        with connect(owner, "owner-pw-1") as conn, conn.cursor() as cursor:
            cursor.execute("CREATE TABLE later_table (id integer)")
            cursor.execute("SHOW TABLES")
            tables = [row[0] for row in cursor.fetchall()]
        assert set(SYNCD_TABLES) | {"alembic_version", "later_table"} <= set(tables)

        with connect(bi, "bi-pw-1") as conn, conn.cursor() as cursor:
            for table in tables:
                cursor.execute(f"SELECT count(*) FROM `{table}`")
            writes = [
                "INSERT INTO sync_state (store, name, value, updated_at) "
                "VALUES ('s', 'n', '{}', now())",
                "UPDATE orders SET note = 'x'",
                "DELETE FROM events",
                "CREATE TABLE mine (id integer)",
                "DROP TABLE later_table",
            ]
            for statement in writes:
                with pytest.raises(pymysql.err.OperationalError) as refused:
                    cursor.execute(statement)
                # 1142: command denied to user for table; 1044: access denied to database
                assert refused.value.args[0] in (1142, 1044), refused.value
    finally:
        run(
            client, *admin, "-e",
            f"DROP DATABASE IF EXISTS `{db}`; DROP USER IF EXISTS '{owner}'@'127.0.0.1';"
            f" DROP USER IF EXISTS '{bi}'@'%';",
        )  # fmt: skip


# --- nginx in front of syncd -------------------------------------------------------------

TOKEN = "proxy-token-8d1e5a"


def nginx_config(tmp: Path, *, tls_port: int, http_port: int, upstream: int) -> Path:
    """deploy/nginx-syncd.conf with only ports, certificate and log paths changed,
    inside the smallest nginx.conf that runs as this user in ``tmp``."""
    subprocess.run(
        [
            need("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost",
            "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem"),
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    changes = {
        "listen 443 ssl;": f"listen 127.0.0.1:{tls_port} ssl;",
        "listen [::]:443 ssl;": "",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen [::]:80;": "",
        "/etc/letsencrypt/live/syncd.example.com/fullchain.pem": str(tmp / "cert.pem"),
        "/etc/letsencrypt/live/syncd.example.com/privkey.pem": str(tmp / "key.pem"),
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{upstream};",
        "/var/log/nginx/": f"{tmp}/logs/",
    }
    site = (DEPLOY / "nginx-syncd.conf").read_text()
    for old, new in changes.items():
        assert old in site, f"nginx-syncd.conf no longer has {old!r}"
        site = site.replace(old, new)
    (tmp / "site.conf").write_text(site)
    (tmp / "logs").mkdir()
    temp_paths = (
        "\n".join(
            f"  {kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi")
        )
        + f"\n  uwsgi_temp_path {tmp}/uwsgi;\n  scgi_temp_path {tmp}/scgi;"
    )
    conf = tmp / "nginx.conf"
    conf.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"worker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/logs/error.log warn;\n"
        + "events { worker_connections 64; }\n"
        + f"http {{\n{temp_paths}\n  include {tmp}/site.conf;\n}}\n"
    )
    return conf


@pytest.fixture
def nginx_in_front(
    tmp_path: Path, fresh_database: Callable[[str], str]
) -> Iterator[tuple[Callable[..., http.client.HTTPResponse], int, Settings, Starlette]]:
    nginx = need("nginx")
    url = fresh_database("sqlite")
    upgrade(url)
    settings = load_settings({"SYNCD_DATABASE_URL": url, "SYNCD_WEBHOOK_SECRET": TOKEN})
    engine = make_engine(url)
    app = create_app(settings, engine, run_scheduler=False)
    try:
        with serving(app) as base:
            upstream = int(base.rsplit(":", 1)[1])
            tls_port, http_port = free_port(), free_port()
            conf = nginx_config(tmp_path, tls_port=tls_port, http_port=http_port, upstream=upstream)
            error_log = tmp_path / "logs" / "error.log"
            process = subprocess.Popen(
                [nginx, "-p", str(tmp_path), "-c", str(conf), "-e", str(error_log),
                 "-g", "daemon off;"],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:

                def listening() -> bool:
                    assert process.poll() is None, error_log.read_text()
                    for port in (tls_port, http_port):
                        try:
                            socket.create_connection(("127.0.0.1", port), timeout=1).close()
                        except OSError:
                            return False
                    return True

                wait_for(listening, timeout=15, message="nginx to listen")
                context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
                context.check_hostname = False

                def request(
                    method: str, path: str, body: bytes | None = None, *, tls: bool = True
                ) -> http.client.HTTPResponse:
                    conn: http.client.HTTPConnection = (
                        http.client.HTTPSConnection("127.0.0.1", tls_port, context=context)
                        if tls
                        else http.client.HTTPConnection("127.0.0.1", http_port)
                    )
                    conn.request(method, path, body=body)
                    response = conn.getresponse()
                    response.read()
                    conn.close()
                    return response

                yield request, tls_port, settings, app
            finally:
                process.terminate()
                process.wait(timeout=15)
    finally:
        engine.dispose()


def _event(event_id: str, note: str = "") -> bytes:
    return orjson.dumps(
        {
            "id": event_id,
            "type": "order.created",
            "created_at": "2026-03-01T10:00:00-06:00",
            "data": {"id": f"ord-{event_id}", "number": 1, "note": note, "line_items": []},
        }
    )


def test_nginx_forwards_only_the_webhook_and_refuses_the_rest(
    nginx_in_front: tuple[Callable[..., http.client.HTTPResponse], int, Settings, Starlette],
    tmp_path: Path,
) -> None:
    request, _, settings, app = nginx_in_front
    daemon = app.state.daemon

    def stored(event_id: str) -> bool:
        with daemon.engine.connect() as conn:
            return conn.scalar(select(Event.id).where(Event.id == event_id)) is not None

    # The webhook, with and without a store name, reaches syncd and is committed.
    answer = request("POST", f"/webhooks/shoperti?token={TOKEN}", _event("evt_proxy_1"))
    assert answer.status == 200
    request_id = answer.getheader("x-request-id") or ""
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), "nginx's $request_id, echoed by syncd"
    assert stored("evt_proxy_1")
    named = request("POST", f"/webhooks/shoperti/default?token={TOKEN}", _event("evt_proxy_2"))
    assert named.status == 200 and stored("evt_proxy_2")
    # syncd's own answers come back as they are (not rewritten by the proxy).
    assert request("POST", "/webhooks/shoperti?token=wrong", _event("evt_x")).status == 401
    assert request("POST", f"/webhooks/shoperti/nope?token={TOKEN}", _event("evt_x")).status == 404

    # Everything else is refused by nginx, never a redirect.
    refused = {
        ("GET", "/metrics"): 404,
        ("GET", "/readyz"): 404,
        ("GET", "/healthz"): 404,
        ("GET", "/"): 404,
        ("POST", "/metrics"): 404,
        ("POST", "/webhooks/shopertiX"): 404,
        ("GET", "/webhooks/shoperti"): 403,
        ("GET", "/webhooks/shoperti/default"): 403,
        ("GET", "/webhooks/shoperti/../../metrics"): 404,
        ("GET", "/webhooks/shoperti/%2e%2e/%2e%2e/metrics"): 404,
    }
    for (method, path), status in refused.items():
        assert request(method, path).status == status, (method, path)

    # Bodies: exactly SYNCD_MAX_BODY_BYTES passes, one byte more stops at nginx.
    limit = settings.max_body_bytes
    head = _event("evt_proxy_big", note="")
    exact = head.replace(b'"note":""', b'"note":"' + b"x" * (limit - len(head)) + b'"')
    assert len(exact) == limit
    assert request("POST", f"/webhooks/shoperti?token={TOKEN}", exact).status == 200
    assert stored("evt_proxy_big")
    too_big = request("POST", f"/webhooks/shoperti?token={TOKEN}", exact + b" ")
    assert too_big.status == 413
    webhooks = daemon.metrics.registry.get_sample_value
    assert webhooks("syncd_webhooks_total", {"store": "default", "code": "413"}) is None
    assert webhooks("syncd_webhooks_total", {"store": "default", "code": "200"}) == 3

    # Plain http: the webhook is refused, not redirected; browsers are redirected.
    plain = request("POST", f"/webhooks/shoperti?token={TOKEN}", _event("evt_plain"), tls=False)
    assert plain.status == 403 and not stored("evt_plain")
    assert request("GET", "/", tls=False).status == 301

    # nginx's access log has the request id and never the token.
    log = (tmp_path / "logs" / "syncd-access.log").read_text()
    assert request_id in log and "/webhooks/shoperti" in log
    assert TOKEN not in log
