"""A shared test suite every provider's tests subclass (first-party and third-party).

Usage::

    from scaling_credentials.testing.provider_suite import ProviderTests

    class TestMyProvider(ProviderTests):
        def make_provider(self) -> Provider: ...
        def store(self, value: str) -> None: ...   # the raw value the backend will hold
        def remove(self) -> None: ...              # make the secret absent

Use pytest fixtures (autouse) in the subclass for per-test set-up. A backend that cannot
hold some value (an empty string, say) calls ``pytest.skip`` from :meth:`store`.
"""

from __future__ import annotations

import asyncio
import threading
import traceback

import pytest

from .._errors import (
    InvalidKeyFormatError,
    ProviderError,
    ScalingCredentialsError,
    SecretNotFoundError,
)
from .._key import ApiKey
from .._provider import Provider
from .._redact import redact
from ._threads import run_in_threads

__all__ = [
    "BAD_VALUES",
    "ProviderTests",
    "assert_equal_masked",
    "assert_key_is",
    "assert_no_secret",
    "assert_no_secret_in_error",
    "error_texts",
]

# The marker every bad value carries, so that a leak is easy to spot.
LEAK_MARKER = "LEAKCHECK7f3a9"

BAD_VALUES: dict[str, str] = {
    "empty": "",
    "whitespace": "  \n\t ",
    "bearer-prefix": f"Bearer scl_live_{LEAK_MARKER}abcdef",
    "wrong-prefix": f"sk_live_{LEAK_MARKER}abcdef",
    "embedded-space": f"scl_live_{LEAK_MARKER} abcdef",
    "control-char": f"scl_live_{LEAK_MARKER}\x07abcdef",
    "one-mebibyte": f"scl_live_{LEAK_MARKER}" + "a" * (1024 * 1024),
}


def assert_no_secret(secret: str, *texts: str) -> None:
    """Fail (without quoting the secret) if any text contains ``secret``."""
    __tracebackhide__ = True  # pytest would print the arguments: the secret and the texts
    for index, text in enumerate(texts):
        if secret in text:
            raise AssertionError(f"text #{index} contains the secret (redacted here)")


def error_texts(error: BaseException) -> list[str]:
    """Everything an exception can show: the whole chained traceback, and for each
    exception in its ``__cause__``/``__context__`` chain its message, repr, ``args``
    and attributes."""
    texts = ["".join(traceback.format_exception(type(error), error, error.__traceback__))]
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        texts += [repr(value) for value in vars(current).values()]
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
    return texts


def assert_no_secret_in_error(secret: str, error: BaseException) -> None:
    """Fail (without quoting the secret) if ``error`` shows ``secret`` anywhere: its
    message, repr, arguments, attributes, or any exception chained behind it."""
    assert_no_secret(secret, *error_texts(error))


def assert_key_is(key: ApiKey, value: str) -> None:
    """Fail, without quoting either side, unless ``key`` holds ``value``."""
    __tracebackhide__ = True  # pytest would print the arguments: the expected value
    if key.reveal() != value:
        raise AssertionError(f"got {key.masked}, expected {ApiKey(value).masked}")


def assert_equal_masked(actual: object, expected: object) -> None:
    """Fail unless ``actual == expected``, showing both sides with every key masked: for
    values that hold keys without being an :class:`ApiKey` (what a file, a backend or a
    header holds; a document, a list or a set of such values). A plain ``assert`` would
    print both sides whole."""
    __tracebackhide__ = True  # pytest would print the arguments: the keys
    if not actual == expected:
        raise AssertionError(f"got {redact(repr(actual))}, expected {redact(repr(expected))}")


def _token(value: str) -> str:
    return value.removeprefix("scl_live_")


def good_value(tag: str = "a") -> str:
    """A well-formed key, distinct per ``tag``."""
    return f"scl_live_{tag}{'0123456789abcdefghij'}{tag}"


class ProviderTests:
    """Behaviour every provider must have. Subclasses implement the three hooks."""

    #: Set False for a provider whose backend caches on its own (its new values show up
    #: only through :meth:`~Provider.refetch`).
    reads_fresh_each_fetch: bool = True

    #: Set True for a provider whose :meth:`~Provider.fetch` never blocks (a lookup in
    #: memory, as ``EnvProvider``'s): its ``afetch`` may then run ``fetch`` on the
    #: event loop's thread and complete without yielding to the loop.
    fetch_never_blocks: bool = False

    def make_provider(self) -> Provider:
        raise NotImplementedError

    def store(self, value: str) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError

    # -- helpers

    def _fetch_after_store(self, provider: Provider, value: str) -> ApiKey:
        if self.reads_fresh_each_fetch:
            self.store(value)
            return provider.fetch()
        rejected = provider.fetch()
        self.store(value)
        return provider.refetch(rejected)

    # -- the suite

    def test_fetch_returns_the_stored_key(self) -> None:
        value = good_value("first")
        self.store(value)
        key = self.make_provider().fetch()
        assert isinstance(key, ApiKey)
        assert_key_is(key, value)
        assert key.source

    def test_surrounding_whitespace_is_stripped(self) -> None:
        value = good_value("ws")
        self.store(f"  {value}\n")
        assert_key_is(self.make_provider().fetch(), value)

    def test_fetch_sees_a_new_value(self) -> None:
        provider = self.make_provider()
        self.store(good_value("old"))
        assert_key_is(provider.fetch(), good_value("old"))
        assert_key_is(self._fetch_after_store(provider, good_value("new")), good_value("new"))

    def test_missing_secret_raises_secret_not_found(self) -> None:
        self.remove()
        provider = self.make_provider()
        with pytest.raises(SecretNotFoundError) as info:
            provider.fetch()
        assert info.value.provider == provider.describe()  # the error names the source
        assert str(info.value)

    @pytest.mark.parametrize("case", sorted(BAD_VALUES))
    def test_bad_value_gives_a_typed_error_without_the_value(self, case: str) -> None:
        value = BAD_VALUES[case]
        self.store(value)
        provider = self.make_provider()
        with pytest.raises(ScalingCredentialsError) as info:
            provider.fetch()
        error = info.value
        assert isinstance(error, (InvalidKeyFormatError, ProviderError)), type(error).__name__
        rendered = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        assert_no_secret(LEAK_MARKER, str(error), repr(error), rendered)

    def test_describe_and_repr_hold_no_secret(self) -> None:
        value = good_value("desc")
        self.store(value)
        provider = self.make_provider()
        key = provider.fetch()
        assert_no_secret(_token(value), provider.describe(), repr(provider), str(key), repr(key))

    def test_afetch_matches_fetch(self) -> None:
        value = good_value("async")
        self.store(value)
        provider = self.make_provider()
        assert_key_is(asyncio.run(provider.afetch()), value)

    def test_afetch_does_not_block_the_event_loop(self) -> None:
        """``afetch`` leaves the event loop free while the backend works: it awaits a
        native async client, or runs ``fetch`` in a worker thread. Checked without any
        timing: ``fetch`` records the thread it runs on, and a ticker task counts the
        turns the loop gave it between the start of ``afetch`` and its end. A blocking
        ``afetch`` calls ``fetch`` on the loop's own thread, or completes without yielding
        to the loop once (no turn for the ticker). A provider whose ``fetch`` never blocks
        sets :attr:`fetch_never_blocks`, and may do both."""
        self.store(good_value("loop"))
        provider = self.make_provider()
        fetch_threads: list[int] = []
        fetch = provider.fetch

        def recording_fetch() -> ApiKey:
            fetch_threads.append(threading.get_ident())
            return fetch()

        try:
            provider.fetch = recording_fetch  # type: ignore[method-assign]
        except AttributeError:  # a provider with __slots__: the turns alone tell
            pass

        async def scenario() -> tuple[ApiKey, int]:
            turns = 0
            stop = False

            async def ticker() -> None:
                nonlocal turns
                while not stop:
                    turns += 1
                    await asyncio.sleep(0)  # ready again at once: a turn whenever free

            async def measured() -> tuple[ApiKey, int]:
                before = turns
                key = await provider.afetch()
                return key, turns - before

            task = asyncio.create_task(ticker())
            try:
                return await asyncio.wait_for(measured(), timeout=30)
            finally:
                stop = True
                await task

        loop_thread = threading.get_ident()  # asyncio.run runs the loop in this thread
        key, turns = asyncio.run(scenario())
        assert_key_is(key, good_value("loop"))
        if self.fetch_never_blocks:
            return
        assert loop_thread not in fetch_threads, (
            "afetch() called fetch() on the event loop's thread, so every other task waits "
            "for the backend: run it in a worker thread (asyncio.to_thread, as "
            "Provider.afetch does) or await a native async client (a provider whose fetch "
            "never blocks sets fetch_never_blocks = True)"
        )
        assert turns > 0, (
            "afetch() completed without yielding to the event loop once, so it did all "
            "its work on the loop's thread: await the backend or a worker thread (a "
            "provider whose fetch never blocks sets fetch_never_blocks = True)"
        )

    def test_concurrent_fetches_from_threads(self) -> None:
        value = good_value("threads")
        self.store(value)
        provider = self.make_provider()
        results = run_in_threads(provider.fetch, threads=8)
        errors = [type(r).__name__ for r in results if isinstance(r, BaseException)]
        assert not errors, errors
        for key in results:
            assert isinstance(key, ApiKey)
            assert_key_is(key, value)

    def test_refetch_gets_past_caches_and_keeps_no_state(self) -> None:
        self.store(good_value("rej"))
        provider = self.make_provider()
        rejected = provider.fetch()
        self.store(good_value("after"))
        assert_key_is(provider.refetch(rejected), good_value("after"))
        # Stateless: asking again, asynchronously, or with a plain fetch, works the same.
        assert_key_is(provider.refetch(rejected), good_value("after"))
        assert_key_is(asyncio.run(provider.arefetch(rejected)), good_value("after"))
        if self.reads_fresh_each_fetch:
            assert_key_is(provider.fetch(), good_value("after"))

    def test_refetch_of_a_missing_secret_raises_secret_not_found(self) -> None:
        self.store(good_value("gone"))
        provider = self.make_provider()
        rejected = provider.fetch()
        self.remove()
        with pytest.raises(SecretNotFoundError):
            provider.refetch(rejected)

    def test_stamp_is_cheap_and_changes_with_the_value(self) -> None:
        self.store(good_value("s1"))
        provider = self.make_provider()
        first = provider.stamp()
        if first is None:
            return  # the provider cannot tell changes without fetching: allowed
        hash(first)
        assert provider.stamp() == first  # nothing changed
        self.store(good_value("s2"))
        assert provider.stamp() != first

    def test_explain_stuck_names_the_source_without_the_secret(self) -> None:
        value = good_value("stuck")
        self.store(value)
        provider = self.make_provider()
        text = provider.explain_stuck(provider.fetch())
        assert isinstance(text, str) and text
        assert_no_secret(_token(value), text)
