"""Tuning variables: numbers only the environment sets (``SANDBOXRUN_DB_LOCK_TIMEOUT``,
``SANDBOXRUN_E2B_*``), checked as strictly as the settings of :mod:`sandboxrun.config`.

Unset or blank: the default. A bad value is a :class:`ConfigError` naming the variable, the
value and the accepted form, raised by the first code that reads it (so only the commands that
use it fail). The Claude Code hook must never fail its agent: it passes ``on_bad``, which is
told the error and the default is used instead.

Standard library only (and :mod:`sandboxrun.errors`): the hook imports it.
"""

from __future__ import annotations

import math
import os

from sandboxrun.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

#: the longest any of these waits may be (30 days; also config.MAX_DURATION): beyond it a typo,
#: and a number too big for the timers it ends up in
MAX_SECONDS = 30 * 24 * 3600.0


def bad_value(name: str, raw: str, accepted: str) -> ConfigError:
    """The error of a bad ``name=raw``: what was given, what is accepted, and 'unset it'."""
    return ConfigError(
        f"invalid value for {name}: {raw!r}", f"{accepted} Or unset {name} for the default."
    )


def _raw(name: str, env: Mapping[str, str] | None) -> str:
    return (os.environ if env is None else env).get(name, "")


def _number(text: str) -> float:
    """``text`` as a float; NaN (which every range check refuses) when it is not one."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def env_seconds(
    name: str,
    default: float | None,
    *,
    zero_ok: bool = False,
    env: Mapping[str, str] | None = None,
    on_bad: Callable[[ConfigError], None] | None = None,
) -> float | None:
    """Seconds from ``$name``: more than 0 (or 0 with ``zero_ok``), at most 30 days; unset or
    blank: ``default``. A bad value raises, or with ``on_bad`` is reported and ``default``."""
    raw = _raw(name, env)
    if not raw.strip():
        return default
    value = _number(raw)
    if (value >= 0 if zero_ok else value > 0) and value <= MAX_SECONDS:  # NaN fails both
        return value
    least = "0 or more" if zero_ok else "more than 0"
    error = bad_value(name, raw, f"Give a number of seconds, {least} and at most "
                                 f"{MAX_SECONDS:.0f} (30 days), e.g. 30.")  # fmt: skip
    if on_bad is None:
        raise error
    on_bad(error)
    return default


def env_rate(name: str, default: float, *, env: Mapping[str, str] | None = None) -> float:
    """A rate per second from ``$name``: a finite number more than 0; unset or blank:
    ``default``; anything else raises."""
    raw = _raw(name, env)
    if not raw.strip():
        return default
    value = _number(raw)
    if value > 0 and math.isfinite(value):
        return value
    raise bad_value(name, raw, "Give a number per second more than 0, e.g. 1 (E2B Hobby) or 5 "
                               "(Pro).")  # fmt: skip


def env_delays(
    name: str, default: tuple[float, ...], *, env: Mapping[str, str] | None = None
) -> tuple[float, ...]:
    """Comma-separated seconds (``1,2,4,8``) from ``$name``, each 0 to 3600; unset or blank:
    ``default``; anything else raises."""
    raw = _raw(name, env)
    if not raw.strip():
        return default
    delays: list[float] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        value = _number(part)
        if not 0 <= value <= 3600:  # also NaN
            delays = []
            break
        delays.append(value)
    if delays:
        return tuple(delays)
    raise bad_value(name, raw, "Give seconds to wait before each retry, separated by commas, "
                               "each 0 to 3600, e.g. 1,2,4,8.")  # fmt: skip
