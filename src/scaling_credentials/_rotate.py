"""The parts of ``scaling-credentials rotate`` that are not command-line plumbing.

* :func:`read_new_key`: the new key from standard input (a hidden prompt on a terminal),
  never from the command line or the environment.
* :class:`NewKey` and :func:`quiet_rejection`: the provider the API check of the new key
  sends it through, and a log filter that keeps the cache's warning about a rejected key
  out of the command's output (the command says so itself).
* :func:`read_back`: the source read again through a fresh provider, until it serves the
  new key (bounded).
* :class:`DeletionPlan` (pure) and :func:`wait_until`: when the old key may be deleted,
  and the optional wait for it.
* :func:`scheme_can_store`: whether the provider behind an installed scheme can store.

The command itself (``cli._cmd_rotate``) runs the steps in order and owns the output.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TextIO

from ._errors import ConfigurationError, ProviderError
from ._key import MAX_KEY_LENGTH, ApiKey
from ._provider import Provider
from ._values import make_key

__all__ = [
    "REFRESH_SLACK",
    "DeletionPlan",
    "NewKey",
    "format_duration",
    "format_utc",
    "quiet_rejection",
    "read_back",
    "read_new_key",
    "scheme_can_store",
    "storing_schemes",
    "wait_until",
]

#: Seconds added to the fleet's TTL before the old key may be deleted: requests already
#: sent with the old key (httpx's default read timeout is 30 s), a fetch that started
#: just before the store, and clocks that disagree by a few seconds.
REFRESH_SLACK = 60.0
#: How the new key is named in messages and in the check's logs.
NEW_KEY_SOURCE = "the new key (standard input)"
PROMPT = "New Scaling API key (input hidden): "
# A non-terminal waiter prints a line this often (a terminal gets a live line each second).
_PLAIN_PROGRESS_EVERY = 30.0


# --------------------------------------------------------------------------- the new key


def read_new_key(stdin: TextIO | None, prompt_stream: TextIO) -> ApiKey:
    """One line from ``stdin`` as the new key, validated; on a terminal, a prompt on
    ``prompt_stream`` with echo off (:func:`getpass.getpass`).

    Raises :class:`ConfigurationError` when there is no key (empty input, end of input,
    no standard input) and :class:`InvalidKeyFormatError` when the line is not a key.
    """
    text: str | None = None
    problem = ""
    if stdin is None:
        problem = "there is no standard input"
    elif _is_terminal(stdin):
        import getpass

        try:
            text = getpass.getpass(PROMPT, stream=prompt_stream)
        except EOFError:
            problem = "the prompt got end of input"
    else:
        try:
            # One line, bounded: a line longer than any key is refused by ApiKey.
            text = stdin.readline(MAX_KEY_LENGTH + 65)
        except (UnicodeDecodeError, ValueError):
            problem = "standard input is not UTF-8 text"
    if not problem and not (text or "").strip():
        problem = "standard input is empty"
    if problem:
        raise ConfigurationError(
            f"no new key: {problem}; pipe the new key in (for example from your password "
            "manager's command line), or run on a terminal to be prompted for it; the key "
            "is never taken from the command line or the environment"
        )
    return make_key(text or "", source=NEW_KEY_SOURCE)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class NewKey(Provider):
    """The new key, held in memory, as a provider: what the API check sends."""

    def __init__(self, key: ApiKey) -> None:
        self._key = key

    def fetch(self) -> ApiKey:
        return self._key

    def describe(self) -> str:
        return NEW_KEY_SOURCE


class _DropRejectionOf(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING or NEW_KEY_SOURCE not in record.getMessage()


@contextlib.contextmanager
def quiet_rejection() -> Iterator[None]:
    """While the new key is checked: no cache warning about :class:`NewKey` (a rejected
    new key is the command's own error, said once). Other providers' records pass."""
    logger = logging.getLogger("scaling_credentials.cache")
    drop = _DropRejectionOf()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


# --------------------------------------------------------------------------- read back


@dataclass(frozen=True)
class ReadBack:
    """What the source served when read back: the key and how many reads it took."""

    key: ApiKey
    reads: int


def read_back(
    provider: Provider,
    *,
    old: ApiKey,
    new: ApiKey,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReadBack:
    """Read ``provider`` (a fresh one, with no state of its own) until it serves ``new``.

    Each read is :meth:`Provider.refetch` with ``old`` as the rejected key: the call the
    library makes after a rejection, which goes past a cache between the provider and the
    backend (an agent's, an extension's). A backend whose reads may lag its writes
    (replicas, eventual consistency) is read again, 0.1 s apart doubling to 1 s, for up to
    ``timeout`` seconds. Raises :class:`ProviderError` when the source still serves the old
    key after that, or serves a third key (another writer).
    """
    desc = provider.describe()
    deadline = clock() + timeout
    delay = 0.1
    for reads in range(1, 1000):  # bounded by the deadline long before
        key = provider.refetch(old)
        if key == new:
            return ReadBack(key, reads)
        if key != old:
            raise ProviderError(
                f"{desc} now serves another key ({key.masked}), neither the old nor the new "
                "one: another writer changed it; find out which key the fleet uses "
                "(scaling-credentials resolve) before deleting any key",
                provider=desc,
            )
        if clock() + delay > deadline:
            break
        sleep(delay)
        delay = min(delay * 2, 1.0)
    raise ProviderError(
        f"{desc} still serves the old key ({old.masked}) {timeout:g} s after the new one was "
        "stored: something between the source and its readers lags (a replica, a cache); "
        "do not delete the old key; check with scaling-credentials resolve --source URI",
        provider=desc,
    )


# --------------------------------------------------------------------------- when to delete


@dataclass(frozen=True)
class DeletionPlan:
    """When the old key may be deleted: ``stored_at`` (seconds since the epoch) plus the
    fleet's longest TTL plus :data:`REFRESH_SLACK`. By then every process has fetched
    the source again on its own, so deleting the old key costs no request a 401."""

    stored_at: float
    fleet_ttl: float
    slack: float = REFRESH_SLACK

    @property
    def wait(self) -> float:
        """Seconds from the store until the old key may be deleted."""
        return self.fleet_ttl + self.slack

    @property
    def delete_after(self) -> float:
        """The time (seconds since the epoch) after which the old key may be deleted."""
        return self.stored_at + self.wait

    def explain(self) -> str:
        """How the wait is made up, for the output."""
        return f"fleet TTL {self.fleet_ttl:g} s + {self.slack:g} s slack"


def format_duration(seconds: float) -> str:
    """``6 min 0 s``, ``45 s``, ``1 h 5 min``: whole seconds, rounded up."""
    total = max(0, math.ceil(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def format_utc(epoch: float, *, iso: bool = False) -> str:
    """``2025-06-01 12:06:05 UTC`` (or ``2025-06-01T12:06:05Z`` with ``iso``), rounded up
    to the second."""
    stamp = time.gmtime(math.ceil(epoch))
    return time.strftime("%Y-%m-%dT%H:%M:%SZ" if iso else "%Y-%m-%d %H:%M:%S UTC", stamp)


def wait_until(
    plan: DeletionPlan,
    *,
    stream: TextIO,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Block until ``plan.delete_after`` with a progress line on ``stream``: rewritten in
    place each second on a terminal, a plain line every 30 s otherwise. Bounded: at most
    one sleep per second of the plan's wait, then it returns. Ctrl-C raises
    :class:`KeyboardInterrupt` to the caller (after ending the progress line)."""
    live = _is_terminal(stream)
    until = format_utc(plan.delete_after)
    width = 0
    last_plain = -math.inf
    try:
        for _ in range(math.ceil(plan.wait) + 2):
            left = plan.delete_after - clock()
            if left <= 0:
                break
            text = (
                f"waiting until {until} before the old key may be deleted: "
                f"{format_duration(left)} left (Ctrl-C stops waiting; the rotation is done)"
            )
            if live:
                stream.write("\r" + text + " " * max(0, width - len(text)))
                width = len(text)
                stream.flush()
            elif clock() - last_plain >= _PLAIN_PROGRESS_EVERY:
                last_plain = clock()
                stream.write(text + "\n")
                stream.flush()
            sleep(min(1.0, left))
    finally:
        if live and width:
            stream.write("\n")
            stream.flush()


# --------------------------------------------------------------------------- schemes


def scheme_can_store(scheme: str) -> bool | None:
    """Whether the provider behind the installed ``scheme`` can store a key
    (:attr:`Provider.can_store` of the class whose ``from_uri`` the entry point names);
    ``None`` when the entry point is not a provider class's method. Loads the entry point
    (imports its module); raises :class:`ConfigurationError` when that fails."""
    from ._registry import _load_factory

    factory = _load_factory(scheme)
    owner = getattr(factory, "__self__", factory)
    if isinstance(owner, type) and issubclass(owner, Provider):
        return bool(owner.can_store)
    return None


def storing_schemes() -> list[str]:
    """The installed schemes whose provider can store (those that fail to load left out)."""
    from ._registry import installed_schemes

    found = []
    for scheme in installed_schemes():
        try:
            if scheme_can_store(scheme.scheme):
                found.append(scheme.scheme)
        except ConfigurationError:
            continue
    return found
