"""Driver errors turned into one line a person can act on.

Every command that touches the database ends up here when the database
cannot be reached or refuses the work: :func:`explain` takes the exception
(SQLAlchemy's, with the driver's underneath) and the configured URL, and
returns a :class:`~syncd.errors.DatabaseUnavailable` whose text says what is
wrong in words, quotes the cause the driver gave, and says what to do. The
password of the URL never appears in it; neither do the statement's
parameters (engines are made with ``hide_parameters``), and e-mail addresses
and registered secrets are masked.
"""

from __future__ import annotations

import os
import re

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from syncd.db import dialect
from syncd.errors import DatabaseUnavailable

URL_VARIABLE = "SYNCD_DATABASE_URL"

# (pattern in the driver's text, what it means, what to do)
_CAUSES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (
        re.compile(r'database "[^"]*" does not exist|unknown database', re.I),
        "the database does not exist",
        "create it (README.md, 'Create the database') or fix the database name in " + URL_VARIABLE,
    ),
    (
        re.compile(
            r'role "[^"]*" does not exist|password authentication failed|access denied'
            r"|no password supplied|authentication",
            re.I,
        ),
        "the server refused the login",
        f"check the user name and password in {URL_VARIABLE} and that the user exists "
        "and may use the database",
    ),
    (
        re.compile(r"permission denied|command denied|insufficient privilege|must be owner", re.I),
        "the user may not do this",
        "run it as the database's owner (README.md, 'Create the database', makes one) or "
        "grant this user the rights",
    ),
    (
        re.compile(
            r"connection refused|can't connect|could not connect|resolve host"
            r"|name or service not known|timeout expired|timed out|no route to host"
            r"|server has gone away|lost connection|is the server running",
            re.I,
        ),
        "the database server does not answer",
        f"check that it is running and that the host and port in {URL_VARIABLE} are right",
    ),
)


def explain(exc: BaseException, raw_url: str) -> DatabaseUnavailable:
    """One line for ``exc``, an error raised while using the database at ``raw_url``."""
    url = _parse(raw_url)
    where = _where(url)
    cause = _cause(exc, url)
    if url is not None and dialect.is_embedded(url):
        return DatabaseUnavailable(_sqlite(where, cause, url))
    for pattern, meaning, todo in _CAUSES:
        if pattern.search(cause):
            return DatabaseUnavailable(
                f"cannot use the database {where}: {meaning} ({cause}): {todo}"
            )
    return DatabaseUnavailable(
        f"the database {where} failed ({cause}): check {URL_VARIABLE} and that the server is up"
    )


def _sqlite(where: str, cause: str, url: URL) -> str:
    path = url.database or ""
    directory = os.path.dirname(os.path.abspath(path)) if path else ""
    if path and path != ":memory:" and directory and not os.path.isdir(directory):
        return (
            f"cannot open the database {where}: the directory {directory} does not exist "
            f"({cause}): create it (mkdir -p {directory}) or fix the path in {URL_VARIABLE}"
        )
    if "unable to open" in cause or "readonly" in cause or "read-only" in cause:
        return (
            f"cannot open the database {where} ({cause}): check that this user may "
            f"read and write the file and its directory, or fix the path in {URL_VARIABLE}"
        )
    if "locked" in cause:
        return (
            f"the database {where} is locked ({cause}): another process holds it; "
            "try again when it is done"
        )
    return f"the database {where} failed ({cause}): check {URL_VARIABLE}"


def _parse(raw_url: str) -> URL | None:
    try:
        return make_url(raw_url)
    except ArgumentError:
        return None


def _where(url: URL | None) -> str:
    if url is None:
        return f"of {URL_VARIABLE}"
    if dialect.is_embedded(url):
        return f"file {url.database}" if url.database else "(SQLite in memory)"
    host = url.host or "localhost"
    port = f":{url.port}" if url.port else ""
    parts = [f"{dialect.kind(url)} at {host}{port}"]
    if url.database:
        parts.append(f"database {url.database}")
    if url.username:
        parts.append(f"user {url.username}")
    return "(" + ", ".join(parts) + ")"


def _cause(exc: BaseException, url: URL | None) -> str:
    """The driver's own words, on one line, without the password."""
    from syncd.ops.logs import scrub

    original = getattr(exc, "orig", None)
    if original is not None:
        args: tuple[object, ...] = tuple(getattr(original, "args", ()))
        if len(args) >= 2 and isinstance(args[0], int) and isinstance(args[1], str):
            text = f"{args[1]} ({args[0]})"  # MariaDB: (code, message)
        else:
            text = str(original)
    elif isinstance(exc, SQLAlchemyError):
        text = str(exc).split("\n(Background", 1)[0]
    else:
        text = str(exc) or type(exc).__name__
    # psycopg: 'connection failed: connection to server at "h", port 1 failed: FATAL:  …'
    text = re.sub(
        r'connection failed: |connection to server at "[^"]*", port \d+ failed: ', "", text
    )
    text = re.sub(r"\b(FATAL|ERROR):\s+", "", text)
    # psycopg quotes the statement ("LINE 2: CREATE …" and a caret): not the cause.
    lines = [part.strip() for part in text.splitlines()]
    text = "; ".join(part for part in lines if part and not part.startswith(("LINE ", "^")))
    if url is not None and url.password:
        text = text.replace(str(url.password), "***")
    text = scrub(text)
    return text[:300] or type(exc).__name__
