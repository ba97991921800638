"""The Adapter interface: everything the server asks of rooms, membership, fan-out and the cluster.

The server talks to its adapter for every operation that would have to cross a process boundary
in a cluster; ``MemoryAdapter`` is the single-process default, ``RedisAdapter`` spans processes.

Two directions, two small protocols, so adapters never import server internals:

* ``Member``: what an adapter needs of one local socket (its id, writing a ready frame);
* ``Node``: what an adapter needs of the server it serves, given once with ``attach(node)``:
  its compression threshold (to frame a payload once), and the hooks inbound cluster requests
  need (describe a socket, disconnect it, expect its acknowledgement, run the server's own
  handlers of a server-side event).

Local operations (``register`` ... ``fan_out``) are synchronous and touch this process only.
Cluster operations (``broadcast`` ... ``broadcast_with_ack``) act on every node: the ones that
return nothing publish in the background (the local part is done when they return); the ones
that gather answers are coroutines with a timeout and return what came in time.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..errors import AckError, ConfigurationError
from ..options import RecoveryOptions, ServerOptions
from ..protocol.deflate import OutgoingMessage
from ..protocol.handshake import Headers
from .dedup import DedupStore, LocalDedup, Reply

if TYPE_CHECKING:
    from .recovery import RoomHistory

__all__ = [
    "NO_REPLY",
    "AckResults",
    "Adapter",
    "AdapterStats",
    "BroadcastTarget",
    "DedupStore",
    "Member",
    "Node",
    "Reply",
    "Session",
    "SocketInfo",
]


class Member(Protocol):
    """What an adapter needs of a local socket."""

    @property
    def id(self) -> str: ...

    def __hash__(self) -> int: ...

    def send_frame(self, frame: bytes | OutgoingMessage, volatile: bool = False) -> object:
        """Write a ready-made frame (an OutgoingMessage is framed for this member: compressed when
        it negotiated compression); a volatile frame is dropped rather than queued when slow."""
        ...


@dataclass(frozen=True, slots=True)
class BroadcastTarget:
    """Who a broadcast goes to: members of any of ``rooms`` (all members when empty), except
    members of any of ``except_rooms`` and the members whose id is in ``except_ids``."""

    rooms: frozenset[str] = frozenset()
    except_rooms: frozenset[str] = frozenset()
    except_ids: frozenset[str] = frozenset()
    volatile: bool = False


@dataclass(frozen=True, slots=True)
class SocketInfo:
    """A socket described by the node it is connected to (what ``fetch_sockets`` gathers)."""

    id: str
    rooms: frozenset[str]
    headers: Headers
    query: dict[str, str]
    auth: Any
    url: str
    time: float
    address: str
    data: Any
    #: The id of the node (adapter) the socket is connected to.
    node: str


@dataclass(slots=True)
class Session:
    """What connection-state recovery keeps of a socket lost unexpectedly (docs/guarantees.md)."""

    #: The private session id the client presents to recover (one use).
    pid: str
    socket_id: str
    #: The rooms it was in when the connection was lost.
    rooms: frozenset[str]
    data: dict[str, Any] | None
    #: When the loss was seen (``time.monotonic()``).
    time: float
    #: Its room changes since the session began (None: none), so that a message is replayed
    #: only when the socket was in the message's rooms when it was sent.
    history: RoomHistory | None = None
    #: When a shared store drops it (``time.monotonic()``; None: ``max_disconnection`` after
    #: ``time``), so that a session put back keeps its age.
    expires: float | None = None


class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_REPLY"


#: What ``Node.server_side_event`` answers when the server has no handler for the event.
NO_REPLY: Final = _NoReply()


class Node(Protocol):
    """The server, as its adapter sees it (``Adapter.attach``)."""

    @property
    def compress_from(self) -> int | None:
        """The size from which messages are compressed; None when compression is off."""
        ...

    def describe(self, member: Member) -> SocketInfo:
        """A local socket's descriptor (id, rooms, handshake, data)."""
        ...

    def disconnect(self, member: Member, close: bool) -> None:
        """Disconnect a local socket (with the closing handshake, or at once)."""
        ...

    def expect_ack(self, member: Member, ack_id: int, timeout: float) -> asyncio.Future[Any] | None:
        """Register ``ack_id`` as pending on a local socket (its reply resolves the future, an
        error reply fails it with AckError); None when the socket cannot take it (not connected,
        or the id is already pending there)."""
        ...

    def server_side_event(self, event: str, args: list[Any]) -> Awaitable[Any]:
        """Run the server's handlers of a server-side event another node emitted; resolves to the
        first handler's return value, NO_REPLY when there is no handler, or raises its error."""
        ...

    def session(self, member: Member) -> Session | None:
        """A connected local socket's session as it stands (recovery on), None without one."""
        ...

    def session_taken(self, pid: str) -> None:
        """Another node recovered the session ``pid``: end this node's connection that still
        holds it (its client came back elsewhere before this node saw the loss)."""
        ...

    def reset_session(self, member: Member) -> None:
        """A local socket's log positions are no longer good (the log was lost or overrun): close
        it (1013) without keeping its session, so that its client comes back afresh."""
        ...


@dataclass(frozen=True, slots=True)
class AckResults:
    """What a broadcast asking for acknowledgements gathered from every node in time."""

    #: socket id → the value its handler returned.
    by_socket: dict[str, Any]
    #: socket id → the AckError its handler answered with (it raised, or had no handler).
    errors: dict[str, AckError] = field(default_factory=dict)
    #: Sockets the message was sent to that did not answer in time.
    missing: frozenset[str] = frozenset()
    #: Nodes that did not say in time which of their sockets they sent it to (their sockets'
    #: answers may be missing without being listed in ``missing``).
    silent_nodes: frozenset[str] = frozenset()

    @property
    def replies(self) -> list[Any]:
        """The replies, in the order they arrived."""
        return list(self.by_socket.values())

    @property
    def complete(self) -> bool:
        """Every socket the message reached answered, and every node reported in time."""
        return not self.missing and not self.silent_nodes

    def __len__(self) -> int:
        return len(self.by_socket)


class AdapterStats:
    """What an adapter counts (the cluster counters are zero for a MemoryAdapter): rendered in
    ``/metrics``."""

    __slots__ = (
        "deaf_detected",
        "dedup_evicted",
        "dedup_unavailable",
        "dropped",
        "duplicates",
        "late_responses",
        "publish_failures",
        "published",
        "received",
        "requests_timed_out",
        "resubscribes",
    )

    def __init__(self) -> None:
        #: Inter-node messages handed to the broker.
        self.published = 0
        #: Inter-node messages that could not be published: lost for the other nodes.
        self.publish_failures = 0
        #: Inter-node messages received and handled (own messages skipped are not counted).
        self.received = 0
        #: Inbound messages dropped, by reason (malformed, version, type, foreign, error).
        self.dropped: dict[str, int] = {}
        #: Responses to requests that had already finished (timed out).
        self.late_responses = 0
        #: Cluster requests that ended at their timeout with some node not answering.
        self.requests_timed_out = 0
        #: Times the node subscribed again (after a lost connection or a deaf subscription).
        self.resubscribes = 0
        #: Times the node found itself deaf (subscribed, but not hearing its own canary).
        self.deaf_detected = 0
        #: Copies of at-least-once messages whose handler did not run again (a ``mid`` seen).
        self.duplicates = 0
        #: Message ids forgotten before their window ended (over dedup_max_entries or _bytes).
        self.dedup_evicted = 0
        #: Messages with an id left unanswered, or replies not kept, because the store (Redis)
        #: could not be reached; their clients send them again.
        self.dedup_unavailable = 0

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def counters(self) -> dict[str, tuple[str, int]]:
        """Prometheus counters (name → (help, value)), without the per-reason drops."""
        return {
            "cluster_messages_published": ("Inter-node messages published", self.published),
            "cluster_publish_failures": (
                "Inter-node messages that could not be published (lost for the other nodes)",
                self.publish_failures,
            ),
            "cluster_messages_received": ("Inter-node messages received and handled", self.received),
            "cluster_late_responses": ("Responses arriving after their request ended", self.late_responses),
            "cluster_requests_timed_out": (
                "Cluster requests that ended at their timeout with a partial result",
                self.requests_timed_out,
            ),
            "cluster_resubscribes": ("Times the adapter subscribed again", self.resubscribes),
            "cluster_deaf_detected": (
                "Times the node did not hear its own canary and re-subscribed",
                self.deaf_detected,
            ),
            "dedup_duplicates": (
                "Copies of at-least-once messages answered without running the handler again",
                self.duplicates,
            ),
            "dedup_evicted": (
                "Message ids forgotten before their de-duplication window ended (store full)",
                self.dedup_evicted,
            ),
            "dedup_unavailable": (
                "At-least-once messages left unanswered, or replies not kept, the store being unreachable",
                self.dedup_unavailable,
            ),
        }


class Adapter(ABC):
    """Rooms, membership and fan-out for one server, and the cluster it may be part of."""

    #: The adapter's counters (zero unless it talks to other nodes).
    stats: AdapterStats

    # ---------------------------------------------------------------- lifecycle

    @abstractmethod
    def attach(self, node: Node) -> None:
        """The server this adapter serves (called once, by the server's constructor)."""

    async def start(self) -> None:  # noqa: B027 - a no-op default, not an abstract method
        """Connect to the other nodes (the server calls it when it starts listening)."""

    def closing(self) -> None:  # noqa: B027 - a no-op default, not an abstract method
        """The server has begun to close (it closes its clients; close() follows)."""

    async def close(self) -> None:  # noqa: B027 - a no-op default, not an abstract method
        """Release the adapter's resources when the server closes (nothing to release by default)."""

    def health(self) -> dict[str, Any]:
        """The adapter's part of ``/health``: ``{"status": "ok"}`` or ``"degraded"`` with details."""
        return {"status": "ok"}

    def gauges(self) -> dict[str, float]:
        """Gauges for ``/metrics`` (name → value), none by default."""
        return {}

    @property
    def node_id(self) -> str:
        """This node's id in the cluster ("local" for a single-process adapter)."""
        return "local"

    # ---------------------------------------------------------------- local

    @abstractmethod
    def register(self, member: Member) -> None:
        """A socket connected."""

    @abstractmethod
    def unregister(self, member: Member) -> None:
        """A socket is gone: forget it and take it out of every room."""

    @abstractmethod
    def get(self, member_id: str) -> Member | None:
        """The local member with this id."""

    @abstractmethod
    def local_members(self) -> Iterator[Member]:
        """Every local member."""

    @abstractmethod
    def local_count(self) -> int:
        """How many local members there are."""

    @abstractmethod
    def join(self, member: Member, rooms: Iterable[str]) -> None:
        """Put a local member in rooms."""

    @abstractmethod
    def leave(self, member: Member, room: str) -> None:
        """Take a local member out of a room."""

    @abstractmethod
    def rooms_of(self, member: Member) -> set[str]:
        """The rooms a local member is in (a copy)."""

    @abstractmethod
    def room_names(self) -> list[str]:
        """Every room with a local member."""

    @abstractmethod
    def room_size(self, room: str) -> int:
        """How many local members a room has."""

    @abstractmethod
    def members(self, target: BroadcastTarget) -> list[Member]:
        """The local members a broadcast with this target would reach, each once."""

    @abstractmethod
    def fan_out(self, frame: bytes | OutgoingMessage, target: BroadcastTarget) -> int:
        """Write ``frame`` to every local member the target selects; return how many got it.

        An OutgoingMessage is passed to every member as is: it builds each variant of the frame
        (uncompressed, compressed per window size) once, on first need.
        """

    # ---------------------------------------------------------------- cluster

    @abstractmethod
    def broadcast(self, payload: bytes, binary: bool, target: BroadcastTarget) -> int:
        """Send an encoded envelope (JSON text, or msgpack when ``binary``) to every member the
        target selects on every node; return how many local members it was written to. It is
        framed once per node."""

    @abstractmethod
    def add_sockets(self, target: BroadcastTarget, rooms: frozenset[str]) -> None:
        """Make every selected socket, on every node, join ``rooms``."""

    @abstractmethod
    def remove_sockets(self, target: BroadcastTarget, rooms: frozenset[str]) -> None:
        """Make every selected socket, on every node, leave ``rooms``."""

    @abstractmethod
    def disconnect_sockets(self, target: BroadcastTarget, close: bool) -> None:
        """Disconnect every selected socket on every node."""

    @abstractmethod
    def delete_room(self, room: str) -> None:
        """Empty a room on every node; its members stay connected."""

    @abstractmethod
    async def fetch_sockets(self, target: BroadcastTarget, timeout: float | None = None) -> list[Any]:
        """The selected sockets of every node: local ones as Members, remote ones as SocketInfo."""

    @abstractmethod
    def server_side_emit(self, event: str, args: list[Any]) -> None:
        """Run the other nodes' handlers of server-side ``event`` (never this node's)."""

    @abstractmethod
    async def server_side_emit_with_ack(
        self, event: str, args: list[Any], timeout: float | None = None
    ) -> list[Any]:
        """``server_side_emit``, gathering each other node's reply (those that came in time)."""

    @abstractmethod
    async def fetch_room_names(self, timeout: float | None = None) -> set[str]:
        """Every room with a member on some node."""

    @abstractmethod
    async def fetch_room_size(self, room: str, timeout: float | None = None) -> int:
        """How many members ``room`` has on all nodes together."""

    # ------------------------------------------------------------ at-least-once

    def dedup_store(self, options: ServerOptions) -> DedupStore:
        """Where the server remembers client message ids and their replies (the server calls it
        once). By default this process alone; a cluster adapter shares them between nodes."""
        return LocalDedup(options, self.stats)

    # ---------------------------------------------------------------- recovery

    def enable_recovery(self, options: RecoveryOptions) -> None:
        """Keep a log of recent messages and the sessions of lost sockets (the server calls it
        once, when ``recovery`` is on). An adapter that cannot raises ConfigurationError."""
        raise ConfigurationError(f"{type(self).__name__} does not support connection-state recovery")

    def log_message(self, payload: bytes, binary: bool, target: BroadcastTarget) -> bytes | None:
        """Give an encoded envelope the next offset of the log and keep it; return the envelope
        with its offset (``"o"``), for the caller to write; or None when the adapter delivers
        it itself, through a log shared by the nodes. Only called when recovery is on;
        ``broadcast`` does it itself."""
        raise NotImplementedError

    def recovery_position(self) -> tuple[str, int]:
        """The log's epoch and its latest offset (what a client that received everything has)."""
        raise NotImplementedError

    def track_rooms(self, member: Member, session: Session | None) -> None:
        """Record an accepted socket's room changes from now on (its rooms now are where it
        starts), continuing those of ``session`` when it recovered one. Only called when recovery
        is on; ``unregister`` stops it."""
        raise NotImplementedError

    def room_history(self, member: Member) -> RoomHistory | None:
        """The room changes recorded for a tracked socket (None when it is not tracked)."""
        raise NotImplementedError

    def save_session(self, session: Session) -> None:
        """Keep the session of a socket lost unexpectedly (for ``max_disconnection`` seconds)."""
        raise NotImplementedError

    async def take_session(self, pid: object, epoch: object, offset: object) -> Session | None:
        """Remove and return the session ``pid`` when it can be recovered: not expired, same
        epoch, and the log still covers every offset after ``offset``; else None. The pid is
        spent either way. (A coroutine for shared stores; the MemoryAdapter's never suspends.)"""
        raise NotImplementedError

    async def replay(self, session: Session, offset: int) -> list[tuple[bytes, bool]] | None:
        """The logged envelopes after ``offset`` addressed to the session's socket (its rooms,
        minus exceptions, or its id), in order; None when the log no longer covers them.

        The caller registers the socket in the same step as this coroutine returns (no await in
        between): the envelopes are exactly those before what the node delivers next."""
        raise NotImplementedError

    @abstractmethod
    async def broadcast_with_ack(
        self, payload: bytes, binary: bool, ack_id: int, target: BroadcastTarget, timeout: float
    ) -> AckResults:
        """Send an envelope asking for acknowledgement ``ack_id`` (it is encoded in ``payload``)
        to every selected socket on every node; gather their replies for ``timeout`` seconds."""
