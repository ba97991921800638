"""Event handlers and acknowledgements, shared by the server's sockets and the client.

* ``HandlerRegistry``: ``on`` / ``off`` / ``once`` per event name. Whether a handler is async and
  how many arguments it takes are decided once, when it is registered.
* ``call_handler``: one calling convention. A sync handler runs inline; an async handler runs
  eagerly up to its first real suspension, so a coroutine that never waits costs no Task and
  handlers start in arrival order.
* ``AckTable``: the pending acknowledgements of one connection, with timeouts.
"""

from __future__ import annotations

import asyncio
import inspect
import secrets
import sys
import types
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._speedups import enabled as speedups_enabled
from .errors import AckError, AckTimeoutError
from .protocol.envelope import PEER_RESERVED_EVENTS

__all__ = [
    "BROADCAST_ACK_IDS",
    "AckTable",
    "Handler",
    "HandlerArityError",
    "HandlerCancelled",
    "HandlerCore",
    "HandlerRegistry",
    "PyHandlerCore",
    "Suspended",
    "call_handler",
    "check_listen",
    "fitting_args",
    "invoke",
    "new_broadcast_ack_id",
    "pack_result",
    "run_eagerly",
    "run_started",
    "unpack_results",
]

AnyHandler = Callable[..., Any]
F = TypeVar("F", bound=AnyHandler)


class HandlerArityError(TypeError):
    """An event arrived with a number of arguments its handler cannot take."""


class HandlerCancelled(Exception):
    """A handler raised CancelledError itself (a sync handler, or the first step of an async one
    awaiting a future that was cancelled): nobody cancelled the caller, so this is the handler's
    failure, reported like any other rather than unwinding the protocol callback that called it."""

    def __init__(self) -> None:
        super().__init__("handler cancelled")


class PyHandlerCore:
    """What a dispatch loop reads of a handler for every call (the base of ``Handler``).

    The spec of its compiled twin (``_speedups/_dispatch``), which keeps these fields as C values
    that the compiled connection core reads without attribute lookups.
    """

    __slots__ = ("fn", "is_async", "min_args", "most_args")

    fn: AnyHandler
    is_async: bool
    min_args: int
    #: ``max_args`` as an int (an int comparison per call, not a test for None).
    most_args: int


if TYPE_CHECKING:
    HandlerCore = PyHandlerCore
else:
    HandlerCore = PyHandlerCore
    if speedups_enabled():
        try:
            from ._speedups._dispatch import HandlerCore
        except ImportError:  # not compiled: the pure-Python version above is used
            pass


class Handler(HandlerCore):
    """A registered handler with what is known of it at registration time."""

    __slots__ = ("max_args", "once")

    def __init__(self, fn: AnyHandler, *, once: bool = False) -> None:
        if not callable(fn):
            raise TypeError(f"handler must be callable, got {fn!r}")
        self.fn = fn
        self.once = once
        self.is_async, self.min_args, self.max_args = _describe(fn)
        self.most_args = sys.maxsize if self.max_args is None else self.max_args

    def check_arity(self, count: int) -> None:
        maximum = self.max_args
        if count < self.min_args or (maximum is not None and count > maximum):
            name = getattr(self.fn, "__qualname__", repr(self.fn))
            takes = (
                f"{self.min_args}"
                if maximum == self.min_args
                else f"{self.min_args}..{'n' if maximum is None else maximum}"
            )
            raise HandlerArityError(f"handler {name} takes {takes} arguments, got {count}")


# Signatures are computed once per code object: handlers defined inside a connection handler
# are new function objects for every connection, but share their code.
_DESCRIPTIONS: dict[tuple[object, int, bool], tuple[bool, int, int | None]] = {}
_MAX_DESCRIPTIONS: Final = 4096


def _describe(fn: AnyHandler) -> tuple[bool, int, int | None]:
    code = getattr(fn, "__code__", None)
    bound = inspect.ismethod(fn)
    defaults = getattr(fn, "__defaults__", None)
    key = (code, len(defaults) if defaults else 0, bound) if code is not None else None
    if key is not None:
        known = _DESCRIPTIONS.get(key)
        if known is not None:
            return known
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        description: tuple[bool, int, int | None] = (is_async, 0, None)
    else:
        minimum = 0
        maximum: int | None = 0
        for parameter in signature.parameters.values():
            if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
                if maximum is not None:
                    maximum += 1
                if parameter.default is parameter.empty:
                    minimum += 1
            elif parameter.kind is parameter.VAR_POSITIONAL:
                maximum = None
            elif parameter.kind is parameter.KEYWORD_ONLY and parameter.default is parameter.empty:
                raise TypeError(f"handler {fn!r} has a required keyword-only parameter")
        description = (is_async, minimum, maximum)
    if key is not None:
        if len(_DESCRIPTIONS) >= _MAX_DESCRIPTIONS:
            _DESCRIPTIONS.clear()
        _DESCRIPTIONS[key] = description
    return description


def fitting_args(handler: Handler, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The leading ``args`` a handler of a local event takes (``disconnect(socket)`` is fine)."""
    accepted = handler.max_args
    return args if accepted is None or accepted >= len(args) else args[:accepted]


def check_listen(event: object, local_events: Mapping[str, int], fn: AnyHandler | None) -> None:
    """Validate a registration: the name can fire on this side, and a handler of a local event
    needs no more arguments than the event passes (``local_events``: name → argument count)."""
    if not isinstance(event, str) or not event or "\x00" in event or event[0] == "$":
        raise ValueError(
            f"cannot listen to {event!r}: event names are non-empty strings without NUL "
            "('$' names belong to the protocol)"
        )
    if event in PEER_RESERVED_EVENTS and event not in local_events:
        raise ValueError(f"{event!r} never fires here; local events are {sorted(local_events)}")
    count = local_events.get(event)
    if count is not None and fn is not None:
        needed = Handler(fn).min_args
        if needed > count:
            name = getattr(fn, "__qualname__", repr(fn))
            raise TypeError(f"a {event!r} handler gets {count} argument(s); {name} requires {needed}")


class HandlerRegistry:
    """Handlers by event name, in registration order."""

    __slots__ = ("_by_event",)

    def __init__(self) -> None:
        # Tuples, not lists: no spare capacity per event, and a dispatch loop iterating one
        # during on()/off() keeps a stable snapshot (they are replaced, never changed).
        self._by_event: dict[str, tuple[Handler, ...]] = {}

    def on(self, event: str, fn: AnyHandler, *, once: bool = False) -> None:
        self._by_event[event] = (*self._by_event.get(event, ()), Handler(fn, once=once))

    def register(self, event: str, fn: F | None, *, once: bool = False) -> F | Callable[[F], F]:
        """``on``/``once`` for public APIs: with ``fn`` register it and return it; without,
        return a decorator that does (``@x.on("event")``)."""
        if fn is None:

            def decorator(handler: F) -> F:
                self.on(event, handler, once=once)
                return handler

            return decorator
        self.on(event, fn, once=once)
        return fn

    def off(self, event: str | None = None, fn: AnyHandler | None = None) -> None:
        """Remove ``fn`` from ``event``; all of ``event``'s handlers without ``fn``; all without both."""
        if event is None:
            self._by_event.clear()
            return
        if fn is None:
            self._by_event.pop(event, None)
            return
        handlers = self._by_event.get(event)
        if handlers is None:
            return
        remaining = tuple(h for h in handlers if h.fn is not fn and h.fn != fn)
        if remaining:
            self._by_event[event] = remaining
        else:
            del self._by_event[event]

    def get(self, event: str) -> tuple[Handler, ...] | None:
        """The handlers of ``event`` (None when there are none); ``once`` handlers are removed."""
        handlers = self._by_event.get(event)
        if handlers is None:
            return None
        for handler in handlers:
            if handler.once:
                remaining = tuple(h for h in handlers if not h.once)
                if remaining:
                    self._by_event[event] = remaining
                else:
                    del self._by_event[event]
                break
        return handlers

    def has(self, event: str) -> bool:
        return event in self._by_event

    def events(self) -> Iterable[str]:
        return self._by_event.keys()


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], pending: Any) -> Generator[Any, Any, Any]:
    """Continue ``coro`` (suspended on ``pending``) under the Task that awaits this."""
    while True:
        try:
            sent = yield pending
        except BaseException as exc:
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                pending = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def _continue(coro: Coroutine[Any, Any, Any], pending: Any) -> Any:
    return await _resume(coro, pending)


class _Finished:
    """The result of a coroutine that finished in its first step."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def run_eagerly(coro: Coroutine[Any, Any, Any]) -> _Finished | asyncio.Task[Any]:
    """Run ``coro`` until it first suspends; finished → its value, else a Task for the rest.

    Exceptions of the first step propagate to the caller.
    """
    try:
        pending = coro.send(None)
    except StopIteration as stop:
        return _Finished(stop.value)
    except asyncio.CancelledError as exc:
        raise HandlerCancelled from exc
    return asyncio.ensure_future(_continue(coro, pending))


class Suspended:
    """What ``invoke`` returns for an async handler that is still running: its Task."""

    __slots__ = ("task",)

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task


def invoke(handler: Handler, args: list[Any] | tuple[Any, ...]) -> Any:
    """Call ``handler`` with ``args``: its result, or ``Suspended`` when an async handler waits.

    What the handler raises before it first suspends (and arity errors) propagates.
    """
    count = len(args)
    if count < handler.min_args or count > handler.most_args:
        handler.check_arity(count)  # raises HandlerArityError
    try:
        result = handler.fn(*args)
    except asyncio.CancelledError as exc:
        raise HandlerCancelled from exc
    # type() rather than inspect.iscoroutine(): this runs for every event of every sync handler.
    if handler.is_async or type(result) is CoroutineType:
        return run_started(result)
    return result


def run_started(coro: Coroutine[Any, Any, Any]) -> Any:
    """What a handler's coroutine gives when run until it first suspends: its value, or
    ``Suspended``; what it raises in that first step propagates."""
    outcome = run_eagerly(coro)
    if isinstance(outcome, _Finished):
        return outcome.value
    return Suspended(outcome)


def call_handler(
    handler: Handler,
    args: list[Any] | tuple[Any, ...],
    done: Callable[[Any, BaseException | None], object] | None = None,
) -> None:
    """Call ``handler`` with ``args``; ``done(result, error)`` follows, now or when it finishes.

    Without ``done``, errors propagate (sync, or in the first step of an async handler) or are
    left to the Task (later steps); with it, every outcome goes to ``done``.
    """
    try:
        result = invoke(handler, args)
    except Exception as exc:
        if done is None:
            raise
        done(None, exc)
        return
    if isinstance(result, Suspended):
        if done is not None:
            result.task.add_done_callback(lambda task: _report(task, done))
        else:
            result.task.add_done_callback(_log_task_error)
    elif done is not None:
        done(result, None)


def _report(task: asyncio.Task[Any], done: Callable[[Any, BaseException | None], object]) -> None:
    if task.cancelled():
        done(None, asyncio.CancelledError())
        return
    error = task.exception()
    done(None if error is not None else task.result(), error)


def _log_task_error(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        task.get_loop().call_exception_handler(
            {"message": "event handler raised", "exception": task.exception(), "task": task}
        )


#: Ack ids from here up (to 2**53 - 1) are for broadcasts asking every recipient for an ack: the
#: sender picks one at random and each recipient's table registers it with ``expect``; ``create``
#: numbers a connection's own requests below it.
BROADCAST_ACK_IDS: Final = 2**52


def new_broadcast_ack_id() -> int:
    """A random ack id from the broadcast range."""
    return BROADCAST_ACK_IDS + secrets.randbelow(2**53 - 1 - BROADCAST_ACK_IDS)


class AckTable:
    """Pending acknowledgements of one connection: id → future, each with its own deadline."""

    __slots__ = ("_next_id", "_pending")

    def __init__(self) -> None:
        self._next_id = 0
        self._pending: dict[int, tuple[asyncio.Future[Any], asyncio.TimerHandle | None]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def create(self, timeout: float | None) -> tuple[int, asyncio.Future[Any]]:
        """A new ack id and the future its reply resolves (AckTimeoutError after ``timeout``)."""
        ack_id = self._next_id
        self._next_id = ack_id + 1 if ack_id < BROADCAST_ACK_IDS - 1 else 0
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        timer = loop.call_later(timeout, self._expire, ack_id, timeout) if timeout is not None else None
        self._pending[ack_id] = (future, timer)
        return ack_id, future

    def expect(self, ack_id: int, timeout: float | None) -> asyncio.Future[Any] | None:
        """A pending request under an id chosen elsewhere (a broadcast asking every recipient for
        the same id, from a range ``create`` never reaches); None when that id is pending here."""
        if ack_id in self._pending:
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        timer = loop.call_later(timeout, self._expire, ack_id, timeout) if timeout is not None else None
        self._pending[ack_id] = (future, timer)
        return future

    def _expire(self, ack_id: int, timeout: float) -> None:
        entry = self._pending.pop(ack_id, None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(AckTimeoutError(f"no acknowledgement within {timeout} s"))

    def discard(self, ack_id: int) -> None:
        """Forget a request (its send failed or its caller gave up)."""
        self._take(ack_id)

    def _take(self, ack_id: int) -> asyncio.Future[Any] | None:
        """Remove a pending request and its timer; its future, or None when not pending."""
        entry = self._pending.pop(ack_id, None)
        if entry is None:
            return None
        future, timer = entry
        if timer is not None:
            timer.cancel()
        return future

    def resolve(self, ack_id: int, args: list[Any], error: Any) -> bool:
        """Deliver a reply; False when no such request is pending (late or unknown)."""
        future = self._take(ack_id)
        if future is None:
            return False
        if future.done():
            return True
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else None
            future.set_exception(AckError(str(message or "remote handler failed"), error))
        else:
            future.set_result(unpack_results(args))
        return True

    def fail(self, ack_id: int, exc: BaseException) -> bool:
        """Fail one pending request; False when it is no longer pending."""
        future = self._take(ack_id)
        if future is None:
            return False
        if not future.done():
            future.set_exception(exc)
            future.exception()
        return True

    def fail_all(self, exc: BaseException) -> None:
        """Fail every pending request (the connection is gone)."""
        pending, self._pending = self._pending, {}
        for future, timer in pending.values():
            if timer is not None:
                timer.cancel()
            if not future.done():
                future.set_exception(exc)
                # Callers may have given up already; don't warn about never-retrieved exceptions.
                future.exception()


def unpack_results(args: list[Any]) -> Any:
    """An ack reply's value: its one result, None for none, a tuple for several."""
    if len(args) == 1:
        return args[0]
    if not args:
        return None
    return tuple(args)


def pack_result(value: Any) -> list[Any]:
    """The ``data`` of an ack reply carrying a handler's return value."""
    return [value]
