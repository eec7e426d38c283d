"""deploy/syncd.service under a real systemd (252 on Debian 12), as the guide installs it.

The machine's PID 1 is not systemd, so the test boots one as the init of a
private PID + mount namespace (``unshare --fork --pid --mount --mount-proc``)
and talks to it with ``nsenter -t PID -m -p systemctl …``. Nothing of the
host is touched: the boot script makes every mount private first, then puts
fresh tmpfs on /run, /tmp, /var/tmp, /var/lib and /var/log/journal, and an
overlay (upper layer on tmpfs) on /etc, so that the guide's own steps
(``useradd --system … syncd``, /etc/syncd/syncd.env, /etc/syncd/api_key and
webhook_secret, the unit in /etc/systemd/system) can run for real. Killing
that systemd (SIGKILL) ends the whole namespace; the test always does, also
when it fails.

Why ``mount --make-rshared /`` after those mounts: systemd 252 builds a
unit's credentials directory in a short-lived helper process with its own
mount namespace, "(sd-mkdcreds)": it mounts a ramfs over /dev/shm there,
writes the credentials into it and moves the mount onto
/run/credentials/<unit>. That mount reaches PID 1's namespace, and from there
the service's, only by mount propagation, which is why systemd itself makes
/ shared when it boots a machine, and skips that when it believes it runs in
a container. With every mount private (as ``--make-rprivate /`` and a fresh
tmpfs /run leave them) the credentials land in the helper's namespace and
vanish with it: $CREDENTIALS_DIRECTORY names an empty directory, even for a
root service without any hardening. Shared propagation inside the private
namespace fixes that without anything reaching the host (the namespace's
mounts have no peers outside it).

The write probes found that systemd 252 leaves /run out of
ProtectSystem=strict once ProtectKernelTunables=, ProtectControlGroups= or
ProtectProc= are set (they imply its API file systems, whose list holds
/run, and the read-only remount skips whatever that list names), so
world-writable /run/lock was writable by the service user: the unit now says
ReadOnlyPaths=/run, and the probes hold it to that.

The unit is used as shipped, plus one drop-in with only what a test install
needs: ``DefaultDependencies=no`` (no sysinit runs in the namespace), the
virtualenv's ``syncd`` for ExecStartPre/ExecStart (instead of the
/usr/local/bin/syncd link), ``ReadWritePaths=`` for the SQLite database's
directory, and ``WatchdogSec=6`` instead of 30 so the watchdog step takes
seconds. Steps and their times are printed (run with ``-s`` to see them).

Needs root, unshare/nsenter and systemd 252 installed; under ``CI=true`` a
missing piece fails the test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from syncd.simulator import SimulatedStore
from tests.support import REPO, free_port, wait_for

UNIT = REPO / "deploy" / "syncd.service"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SYSTEMD = Path("/lib/systemd/systemd")
API_KEY = "sk_unit_test_4b8e21c9"
TOKEN = "whsec_unit_test_7f3a90d2"
INSIDE = "/run/syncd-test"  # where the test directory is bound in the namespace

pytestmark = pytest.mark.slow
# Where the service may write, and where not (see the write probes).
WRITABLE = (f"{INSIDE}/data", "/var/lib/syncd", "/tmp")
PROBES = (
    *WRITABLE,
    "/var/lib/syncd-scratch",
    "/etc/syncd",
    "/usr/local",
    "/var/tmp/..",
    INSIDE,
    "/run",
    "/run/lock",
    str(Path(sys.prefix) / "bin"),
    str(REPO),
)


def unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(f"!!! SKIPPED: {message}")


def preflight() -> None:
    if os.geteuid() != 0:
        unavailable("the systemd test needs root (it boots systemd in a namespace)")
    for tool in ("unshare", "nsenter", "useradd"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            unavailable(f"{tool} is not installed")
    if not SYSTEMD.exists():
        unavailable(f"{SYSTEMD} is not installed")


def service_syncd(test_dir: Path) -> str:
    """The ``syncd`` the unit runs, as a path inside the namespace.

    The service sees neither /tmp (the namespace mounts its own) nor home
    directories (ProtectHome=yes), and the checkout under test may be in
    either. So the code under test is copied into the test directory, and
    the test virtualenv's packages are bound into it when the namespace
    boots (:data:`BOOT`); a virtualenv of the system's python of the same
    version runs them, since this one's interpreter may be under a home
    directory too (pyenv's ~/.pyenv).
    """
    import syncd
    from syncd.db.engine import migrations_dir

    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = Path("/usr/bin") / version
    if not system.exists():
        pytest.fail(
            f"no {system} to run the service with: the unit hides this python "
            f"({sys.base_prefix}) if it lives under a home directory or /tmp",
            pytrace=False,
        )
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(Path(syncd.__file__).parent, test_dir / "src" / "syncd", ignore=skip)
    shutil.copytree(migrations_dir(), test_dir / "src" / "migrations", ignore=skip)
    (test_dir / "site-packages").mkdir()
    venv = test_dir / "venv"
    subprocess.run([system, "-m", "venv", "--without-pip", "--symlinks", venv], check=True)
    (venv / "lib" / version / "site-packages" / "syncd-test.pth").write_text(
        f"import sys; sys.path.insert(0, {INSIDE + '/src'!r})\n"
        f"import site; site.addsitedir({INSIDE + '/site-packages'!r})\n"
    )
    script = venv / "bin" / "syncd"
    script.write_text(
        # As pip writes it: the guard matters, the apply process (multiprocessing's
        # spawn) imports this script again as its __main__.
        f"#!{INSIDE}/venv/bin/python\nimport sys\nfrom syncd.cli import main\n"
        'if __name__ == "__main__":\n    sys.exit(main())\n'
    )
    script.chmod(0o755)
    return f"{INSIDE}/venv/bin/syncd"


def venv_packages() -> Path:
    """The site-packages of the virtualenv running the tests (syncd's dependencies)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return next(Path(sys.prefix).glob(f"lib/{version}/site-packages"))


BOOT = r"""#!/bin/sh
# Runs as PID 1 of a new PID + mount namespace; becomes systemd.
set -eu
mount --make-rprivate /
test_dir="$1"
# Modes as on a booted machine (a bare tmpfs would be world-writable).
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p {inside}
mount --bind "$test_dir" {inside}
# The test virtualenv's packages, wherever it is (before /tmp is covered).
mount --bind "$2" {inside}/site-packages
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
mount -t tmpfs -o mode=0755 tmpfs /var/lib
mount -t tmpfs -o mode=2755 tmpfs /var/log/journal
mkdir -p {inside}/etc-upper {inside}/etc-work
mount -t tmpfs -o mode=0755 tmpfs {inside}/etc-upper
mkdir {inside}/etc-upper/upper {inside}/etc-upper/work
mount -t overlay overlay \
  -o lowerdir=/etc,upperdir={inside}/etc-upper/upper,workdir={inside}/etc-upper/work /etc
mount -t tmpfs -o mode=0755 tmpfs /etc/systemd/system
# See the module's docstring: credentials need shared propagation.
mount --make-rshared /

# The guide's install steps (docs/deploy.md, sections 1 and 2).
useradd --system --home-dir /var/lib/syncd --no-create-home --shell /usr/sbin/nologin syncd
install -d -m 0755 /etc/syncd
install -m 0600 {inside}/syncd.env /etc/syncd/syncd.env
install -m 0600 {inside}/api_key /etc/syncd/api_key
install -m 0600 {inside}/webhook_secret /etc/syncd/webhook_secret
install -d -o syncd -g syncd -m 0750 {inside}/data
install -d -o syncd -g syncd -m 0750 /var/lib/syncd-scratch
cp {inside}/syncd.service /etc/systemd/system/syncd.service
mkdir /etc/systemd/system/syncd.service.d
cp {inside}/test.conf /etc/systemd/system/syncd.service.d/test.conf
cat > /etc/systemd/system/default.target <<'UNIT'
[Unit]
Description=syncd test target
DefaultDependencies=no
Wants=systemd-journald.socket systemd-journald.service
UNIT
exec {systemd} --system
"""


class Namespace:
    """A systemd booted in its own PID + mount namespace."""

    def __init__(self, test_dir: Path) -> None:
        self.test_dir = test_dir
        self.unshare: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None  # systemd's pid, as the host sees it

    def boot(self) -> None:
        script = self.test_dir / "boot.sh"
        script.write_text(BOOT.format(inside=INSIDE, systemd=SYSTEMD))
        script.chmod(0o755)
        with (self.test_dir / "boot.log").open("wb") as log:
            self.unshare = subprocess.Popen(
                [
                    "unshare", "--fork", "--pid", "--mount", "--mount-proc",
                    script, self.test_dir, venv_packages(),
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        unshare = self.unshare

        def child() -> int | None:
            assert unshare.poll() is None, (self.test_dir / "boot.log").read_text()[-3000:]
            pids = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children").read_text().split()
            if not pids:
                return None
            # Once the script has exec'ed, the child is systemd.
            if Path(f"/proc/{pids[0]}/exe").resolve() != SYSTEMD.resolve():
                return None
            return int(pids[0])

        self.pid = wait_for(child, timeout=30, message="systemd to start in the namespace")
        wait_for(
            lambda: (
                self.systemctl("is-system-running", check=False).stdout.strip()
                in ("running", "degraded")
            ),
            timeout=60,
            interval=0.2,
            message="systemd to finish booting",
        )

    def run(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        assert self.pid is not None
        result = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "-p", *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)}: {result.returncode}\n{result.stdout}{result.stderr}"
            )
        return result

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check)

    def show(self, *properties: str) -> dict[str, str]:
        out = self.systemctl("show", "syncd.service", *(f"-p{name}" for name in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self) -> list[str]:
        return self.run(
            "journalctl", "-u", "syncd.service", "-o", "cat", "--no-pager"
        ).stdout.splitlines()

    def kill(self) -> None:
        """SIGKILL to the namespace's systemd ends every process in it."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.unshare is not None:
            try:
                self.unshare.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.unshare.pid, signal.SIGKILL)
                self.unshare.wait(10)


@pytest.fixture
def namespace(tmp_path: Path) -> Iterator[Namespace]:
    preflight()
    test_dir = tmp_path / "ns"
    test_dir.mkdir()
    test_dir.chmod(0o755)
    tmp_path.chmod(0o755)
    ns = Namespace(test_dir)
    try:
        yield ns
    finally:
        ns.kill()
        assert ns.pid is None or not Path(f"/proc/{ns.pid}").exists()


class Steps:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float]] = []
        self.started = time.monotonic()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self.rows.append((name, time.monotonic() - began))

    def report(self) -> str:
        lines = [f"  {seconds:7.2f} s  {name}" for name, seconds in self.rows]
        total = time.monotonic() - self.started
        return "\n".join(["systemd test steps:", *lines, f"  {total:7.2f} s  in all"])


def write_install(test_dir: Path, port: int, api_url: str) -> None:
    shutil.copy(UNIT, test_dir / "syncd.service")
    (test_dir / "api_key").write_text(API_KEY + "\n")
    (test_dir / "webhook_secret").write_text(TOKEN + "\n")
    (test_dir / "syncd.env").write_text(
        f"SYNCD_DATABASE_URL=sqlite:///{INSIDE}/data/syncd.db\n"
        f"SYNCD_PORT={port}\n"
        f"SYNCD_API_URL={api_url}\n"
    )
    syncd = service_syncd(test_dir)
    (test_dir / "test.conf").write_text(
        "# The test install: no sysinit in the namespace, the virtualenv's syncd,\n"
        "# the SQLite database's directory, and a short watchdog for the test.\n"
        "[Unit]\nDefaultDependencies=no\n"
        "[Service]\n"
        f"ExecStartPre=\nExecStartPre={syncd} db upgrade\n"
        f"ExecStart=\nExecStart={syncd} serve\n"
        f"ReadWritePaths={INSIDE}/data\n"
        "WatchdogSec=6\n"
    )


def webhook(port: int, event_id: str, token: str = TOKEN) -> httpx.Response:
    body = {"id": event_id, "object": "event", "type": "product.updated", "data": {"id": "p1"}}
    return httpx.post(
        f"http://127.0.0.1:{port}/webhooks/shoperti?token={token}", json=body, timeout=10
    )


def test_the_unit_under_a_real_systemd(namespace: Namespace, tmp_path: Path) -> None:
    steps = Steps()
    port = free_port()
    store = SimulatedStore(
        seed=3, api_key=API_KEY,
        webhook_url=f"http://127.0.0.1:{port}/webhooks/shoperti?token={TOKEN}",
    )  # fmt: skip
    api_url = store.start_in_thread()
    database = namespace.test_dir / "data" / "syncd.db"
    try:
        write_install(namespace.test_dir, port, api_url)
        with steps.step("boot systemd in the namespace"):
            namespace.boot()
        assert namespace.systemctl("cat", "syncd.service").stdout.count("WatchdogSec=") == 2

        with steps.step("systemctl start syncd (db upgrade, then serve until READY=1)"):
            namespace.systemctl("start", "syncd.service")
        # start returned: READY=1 is in, so syncd takes webhooks at once (no retry).
        with steps.step("first webhook after start"):
            answer = webhook(port, "evt_unit_1")
        assert answer.status_code == 200, answer.text
        state = namespace.show("ActiveState", "SubState", "MainPID", "StatusText", "NRestarts")
        assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
        assert state["StatusText"] == f"receiving webhooks on 127.0.0.1:{port}"
        # The webhook secret came from LoadCredential=: a wrong token is refused.
        assert webhook(port, "evt_unit_2", token="wrong").status_code == 401

        # The API key too: webhooks of the simulated store are verified with it
        # against its API and applied (api verify mode refuses unverified ones).
        with steps.step("3 orders sold, verified through the API and applied"):
            store.run(store.sell(orders=3), timeout=60)
            store.run(store.wait_deliveries(timeout=60), timeout=70)

            def settled() -> bool:
                # The 3 orders are in and no event waits: their later events
                # (paid, fulfilled) are verified and applied too, not still queued.
                with contextlib.closing(
                    sqlite3.connect(f"file:{database}?mode=ro", uri=True)
                ) as conn:
                    orders = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
                    waiting = conn.execute(
                        "SELECT count(*) FROM events WHERE status = 'pending'"
                    ).fetchone()[0]
                    return bool(orders == 3 and waiting == 0)

            wait_for(settled, timeout=60, message="3 orders applied, no event pending")
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
            unverified = conn.execute(
                "SELECT count(*) FROM events WHERE source = 'webhook' AND NOT verified "
                "AND type LIKE 'order.%'"
            ).fetchone()[0]
        assert unverified == 0
        main_pid = state["MainPID"]
        uid, gid = (
            namespace.run("id", "-u", "syncd").stdout.strip(),
            namespace.run("id", "-g", "syncd").stdout.strip(),
        )
        environ = namespace.run("cat", f"/proc/{main_pid}/environ").stdout.split("\0")
        credentials = [v for v in environ if v.startswith("CREDENTIALS_DIRECTORY=")]
        assert credentials == ["CREDENTIALS_DIRECTORY=/run/credentials/syncd.service"]
        assert not any(API_KEY in v or TOKEN in v for v in environ)  # files, not variables

        # ProtectSystem=strict + ReadWritePaths=: in the service's mount
        # namespace, as the service's user (setpriv, no capabilities), only the
        # database directory, the StateDirectory and the private /tmp take a
        # file. /var/lib/syncd-scratch is the service user's own directory (so
        # file permissions allow it) outside ReadWritePaths=: the read-only
        # mount is what refuses it.
        with steps.step("write probes as the service user in its mount namespace"):
            writable, errors = {}, {}
            for path in PROBES:
                probe = namespace.run(
                    "nsenter", "-t", main_pid, "-m",
                    "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                    "sh", "-c", f"touch {path}/.probe && rm {path}/.probe",
                    check=False,
                )  # fmt: skip
                writable[path] = probe.returncode == 0
                errors[path] = probe.stderr.strip().rsplit(": ", 1)[-1]
        assert writable == dict.fromkeys(PROBES, False) | dict.fromkeys(WRITABLE, True), errors
        assert errors["/var/lib/syncd-scratch"] == "Read-only file system", errors
        assert errors["/etc/syncd"] == "Read-only file system", errors
        # World-writable /run/lock: read-only only thanks to the unit's ReadOnlyPaths=/run.
        assert errors["/run/lock"] == "Read-only file system", errors
        # The database, its WAL files and the reconcile lock file, nothing else.
        written = sorted(p.name for p in database.parent.iterdir())
        assert written[0] == "syncd.db" and all(n.startswith("syncd.db") for n in written)

        with steps.step("systemd-analyze security (the loaded unit)"):
            security = namespace.run("systemd-analyze", "security", "syncd.service")
        match = re.search(r"Overall exposure level for syncd\.service: (\d+\.\d+)", security.stdout)
        assert match is not None, security.stdout[-500:]
        exposure = float(match.group(1))
        assert exposure <= 1.5, security.stdout

        # SIGKILL of the daemon: restarted per Restart=on-failure (RestartSec=5).
        with steps.step("SIGKILL of the daemon until active again (RestartSec=5)"):
            namespace.systemctl("kill", "--kill-whom=main", "--signal=SIGKILL", "syncd.service")
            wait_for(
                lambda: namespace.show("NRestarts", "ActiveState", "SubState")
                == {"NRestarts": "1", "ActiveState": "active", "SubState": "running"},
                timeout=60, interval=0.2, message="a restart after SIGKILL",
            )  # fmt: skip
        assert namespace.show("MainPID")["MainPID"] != main_pid
        assert webhook(port, "evt_unit_3").status_code == 200

        # A hung daemon (SIGSTOP: no more WATCHDOG=1): killed and restarted.
        with steps.step("SIGSTOP of the daemon until restarted (WatchdogSec=6)"):
            namespace.systemctl("kill", "--kill-whom=main", "--signal=SIGSTOP", "syncd.service")
            wait_for(
                lambda: namespace.show("NRestarts", "ActiveState", "SubState")
                == {"NRestarts": "2", "ActiveState": "active", "SubState": "running"},
                timeout=90, interval=0.2, message="a restart after the watchdog timeout",
            )  # fmt: skip
        assert webhook(port, "evt_unit_4").status_code == 200

        with steps.step("systemctl stop syncd"):
            namespace.systemctl("stop", "syncd.service")
        stopped = namespace.show("ActiveState", "Result", "ExecMainStatus")
        assert stopped["ActiveState"] == "inactive" and stopped["Result"] == "success", stopped
        assert stopped["ExecMainStatus"] == "0", stopped  # syncd exited 0, not killed

        journal = namespace.journal()
        records = []
        for line in journal:
            if line.startswith("{"):
                records.append(json.loads(line))  # syncd's lines are whole JSON objects
        events = [record["event"] for record in records]
        assert events.count("serve.ready") == 3 and events[-1] == "serve.stopped", events
        assert "watchdog.started" in events
        assert any("Watchdog timeout" in line for line in journal), journal[-30:]
        assert "syncd.service: Deactivated successfully." in journal[-4:], journal[-6:]
        assert any("Main process exited, code=killed, status=9/KILL" in line for line in journal)
        assert not any(API_KEY in line or TOKEN in line for line in journal)
    except BaseException:
        if namespace.pid is not None:
            print("\n".join(namespace.journal()[-60:]))
        raise
    finally:
        print(steps.report())
        if namespace.pid is not None:
            print(f"systemd-analyze security exposure: {locals().get('exposure')}")
        store.stop_thread()
