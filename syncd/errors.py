"""The errors syncd raises, in one tree.

Every error says what went wrong and, where there is one, what to do next.
No message may carry a secret (API key, webhook secret) or customer data.

    SyncdError
    ├── ConfigError            invalid configuration; names the variable
    ├── SchemaNotAtHead        the database needs `syncd db upgrade`
    ├── DatabaseUnavailable    the database did not answer (webhooks get 503)
    ├── WireError              a payload does not have the shape docs/api.md describes
    └── ApiError               the Shoperti API failed (after retries)
        ├── ApiAuthError       401: the API key is wrong
        ├── ApiNotFound        404: unknown id (or not this account's)
        ├── ApiRateLimited     429 that outlasted our retries
        └── ApiUnavailable     connection errors, timeouts, 5xx after retries
"""

from __future__ import annotations


class SyncdError(Exception):
    """Base of every error syncd raises on purpose."""


class ConfigError(SyncdError):
    """Invalid configuration. ``str()`` is one line naming the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


class SchemaNotAtHead(SyncdError):
    def __init__(
        self, current: str | None, head: str | None, *, missing_file: str | None = None
    ) -> None:
        self.current = current
        self.head = head
        if missing_file is not None:
            message = (
                f"the database file {missing_file} does not exist yet: "
                "run `syncd db upgrade` to create it"
            )
        else:
            message = (
                f"database schema is at {current or 'nothing (empty database)'}, "
                f"not at {head}: run `syncd db upgrade`"
            )
        super().__init__(message)


class DatabaseUnavailable(SyncdError):
    """The database could not be reached or refused the work."""


class WireError(SyncdError):
    """A payload from Shoperti (webhook or API) is not what docs/api.md describes."""


class ApiError(SyncdError):
    """The Shoperti API did not give us what we asked for."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ApiAuthError(ApiError):
    pass


class ApiNotFound(ApiError):
    pass


class ApiRateLimited(ApiError):
    pass


class ApiUnavailable(ApiError):
    pass
