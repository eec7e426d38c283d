"""Fault knobs: what goes wrong, on purpose, in deliveries and API answers."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Faults:
    """All rates are fractions in [0, 1]; all times are real seconds. Default: none."""

    drop_rate: float = 0.0
    """Events whose webhook is lost for good: never attempted, never retried."""
    duplicate_rate: float = 0.0
    """Events delivered twice (a few: three times); each copy has its own retries."""
    reorder_window: int = 0
    """First deliveries are shuffled within windows of this many events (0 or 1: none)."""
    delay_max: float = 0.0
    """A random delay up to this before each first delivery (and duplicate)."""
    api_429_rate: float = 0.0
    """API requests answered 429 with ``Retry-After: api_retry_after``."""
    api_5xx_rate: float = 0.0
    """API requests answered 500, 502 or 503."""
    api_slow_rate: float = 0.0
    """API requests answered only after ``api_slow_seconds`` (to provoke timeouts)."""
    api_slow_seconds: float = 0.0
    api_retry_after: int = 1
    api_latency: float = 0.0
    """Seconds every API answer takes (a real API's round trip and work), 0: none."""
    api_max_concurrent: int = 0
    """API requests beyond this many in flight are answered 429 with
    ``Retry-After: api_retry_after`` (counted in ``api_busy``); 0: no limit."""

    def __post_init__(self) -> None:
        for spec in fields(self):
            if spec.name.endswith("_rate"):
                value = getattr(self, spec.name)
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"Faults.{spec.name} must be within [0, 1], not {value}")
        if self.api_429_rate + self.api_5xx_rate > 1.0:
            raise ValueError("Faults.api_429_rate + Faults.api_5xx_rate must not exceed 1")
        if self.reorder_window < 0 or self.delay_max < 0 or self.api_slow_seconds < 0:
            raise ValueError("Faults.reorder_window, delay_max and api_slow_seconds must be >= 0")
        if self.api_retry_after < 0:
            raise ValueError("Faults.api_retry_after must be >= 0")
        if self.api_latency < 0 or self.api_max_concurrent < 0:
            raise ValueError("Faults.api_latency and api_max_concurrent must be >= 0")
