// TypeScript declarations of nanosocket.js, the NanoSocket browser client (docs/clients.md).
// Times are in milliseconds.

export declare const VERSION: string;
/** The subprotocol a NanoSocket v1 client offers. */
export declare const V1_SUBPROTOCOL: "nanosocket.v1";
/** Most envelopes one batch frame may carry. */
export declare const MAX_BATCH: number;
/** The largest frame this client writes. */
export declare const MAX_PAYLOAD: number;
/** Bytes the browser may hold unsent before a send is dropped. */
export declare const MAX_BUFFERED: number;
/** Events a peer may never emit: each side raises them locally. */
export declare const PEER_RESERVED_EVENTS: ReadonlySet<string>;

export type ConnectionState = "disconnected" | "connecting" | "connected" | "reconnecting";

/** Why a connection ended, as the `disconnect` event says (the same strings as the Python client). */
export type DisconnectReason =
  | "client disconnect"
  | "server disconnect"
  | "server shutting down"
  | "transport close"
  | "transport error"
  | "ping timeout"
  | "policy violation";

/** A value that can travel in an envelope: JSON, plus binary data (sent as msgpack `bin`). */
export type Payload =
  | null
  | boolean
  | number
  | string
  | Uint8Array
  | ArrayBuffer
  | ArrayBufferView
  | readonly Payload[]
  | { readonly [key: string]: Payload | undefined };

export interface NanoSocketClientOptions {
  /** Start connecting at once (default true). */
  autoConnect?: boolean;
  /** Reconnect after an unexpected loss, and retry a failed first connect (default true). */
  reconnection?: boolean;
  /** Attempts in a row before `reconnect_failed`; null: no limit (default null). */
  reconnectionAttempts?: number | null;
  /** Ms before the first reconnection attempt, doubled for each further one (default 1000). */
  reconnectionDelay?: number;
  /** Longest wait between two attempts, ms (default 30000). */
  reconnectionDelayMax?: number;
  /** Jitter: each wait randomized by up to this fraction of itself, 0..1 (default 0.5). */
  randomizationFactor?: number;
  /** Ms one connection attempt may take: WebSocket open and the server's $connect (default 20000). */
  timeout?: number;
  /** Sent with $connect; the server's middleware reads it as `socket.handshake.auth` (default null). */
  auth?: Payload;
  /**
   * Messages waiting unsent (emits and calls while disconnected, at-least-once calls waiting for
   * their turn); over it the oldest waiting is dropped and reported, 0: none kept (default 1000).
   */
  maxQueueSize?: number;
  /** Bytes (encoded) of the messages waiting unsent; over it the oldest is dropped (default 4 MiB). */
  maxQueueBytes?: number;
  /** Ms a message may wait unsent before it is dropped and reported; null: no limit (default 300000). */
  maxQueueAge?: number | null;
  /** Default ms call() waits for its acknowledgement; null waits as long as it takes (default null). */
  ackTimeout?: number | null;
  /**
   * Copies of a call sent again, with the same message id, when no reply came within ackTimeout
   * (needed with retries); 0: each call is sent once (default 0). With retries, calls are at least
   * once, one at a time, in order; the server runs the handler once per message id.
   */
  retries?: number;
  /** Ms of silence before a $ping, and then before the link is declared dead; null/0: off (default 25000). */
  heartbeatInterval?: number | null;
}

export type ResolvedOptions = Readonly<
  Required<Omit<NanoSocketClientOptions, "heartbeatInterval" | "maxQueueAge">>
> & {
  readonly heartbeatInterval: number | null;
  readonly maxQueueAge: number | null;
};

/** Why a message was dropped unsent. */
export type DropReason = "queue_full" | "queue_bytes" | "expired" | "send_buffer_full";

/** The local events and their arguments. */
export interface LocalEvents {
  connect: () => void;
  disconnect: (reason: DisconnectReason) => void;
  connecting: () => void;
  reconnecting: (attempt: number) => void;
  reconnect_failed: () => void;
  connect_error: (error: Error) => void;
  error: (error: Error) => void;
  /** An emit was dropped unsent (a dropped call rejects with MessageDropped instead). */
  drop: (why: DropReason, event: string) => void;
}

/** A handler of a server event: its return value (or Promise) answers an ack request. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type EventHandler = (...args: any[]) => unknown;

export declare class NanoSocketError extends Error {
  constructor(message: string);
}
export declare class ConfigurationError extends NanoSocketError {}
export declare class ProtocolError extends NanoSocketError {
  constructor(message: string, closeCode?: number);
  readonly closeCode: number;
}
export declare class HandshakeError extends NanoSocketError {}
export declare class ConnectTimeoutError extends NanoSocketError {}
export declare class ConnectionClosed extends NanoSocketError {
  constructor(code: number, reason?: string);
  readonly code: number;
  readonly reason: string;
}
export declare class ConnectionClosedOK extends ConnectionClosed {}
export declare class ConnectionClosedError extends ConnectionClosed {}
export declare class ConnectError extends NanoSocketError {
  constructor(message: string, data?: unknown);
  readonly data: unknown;
}
export declare class AckTimeoutError extends NanoSocketError {}
/** A message dropped unsent: the server never saw it. */
export declare class MessageDropped extends ConnectionClosedError {
  constructor(why: DropReason, event: string);
  readonly why: DropReason;
  readonly event: string;
}
/** An at-least-once call got no reply to any of its copies: the handler may or may not have run. */
export declare class DeliveryTimeoutError extends AckTimeoutError {
  constructor(message: string, detail: { mid: string; copies: number });
  readonly mid: string;
  readonly copies: number;
}
export declare class AckError extends NanoSocketError {
  constructor(message: string, data?: unknown);
  /** The error object the remote handler answered with ({message, type, ...}). */
  readonly data: unknown;
}

export declare function connectionClosed(code: number, reason?: string): ConnectionClosed;
export declare function disconnectReason(code: number): DisconnectReason;
export declare function reconnectDelay(
  attempt: number,
  options: { delay: number; delayMax: number; randomizationFactor: number; rand?: () => number },
): number;
export declare function clientOptions(options?: NanoSocketClientOptions): ResolvedOptions;
export declare function normalizeUrl(url?: string): string;
export declare function checkEmitName(event: string): string;
export declare function msgpackEncode(value: Payload): Uint8Array;
export declare function msgpackDecode(data: Uint8Array | ArrayBuffer): unknown;
export declare function encodeEnvelope(envelope: object): { payload: string | Uint8Array; binary: boolean };
export declare function decodeFrame(data: string | ArrayBuffer | Uint8Array): unknown;
export declare function iterEnvelopes(decoded: unknown): unknown[];
export declare function readEnvelope(envelope: unknown): {
  event: string | null;
  args: unknown[];
  ack: number | null;
  error: { message?: string; [key: string]: unknown } | null;
};

/** `client.timeout(ms)`: calls with their own timeout. */
export interface TimedCalls {
  call<T = unknown>(event: string, ...args: Payload[]): Promise<T>;
  emitWithAck<T = unknown>(event: string, ...args: Payload[]): Promise<T>;
}

export declare class NanoSocketClient {
  /** `url`: ws(s)://, http(s):// or a path of this page's origin (default "/"). */
  constructor(url?: string, options?: NanoSocketClientOptions);

  /** The socket id the server gave this connection (null while not connected). */
  readonly id: string | null;
  readonly url: string;
  readonly options: ResolvedOptions;
  readonly connected: boolean;
  readonly connectionState: ConnectionState;
  /**
   * True when the current connection recovered the previous one's session (the same id and
   * rooms; the missed messages are handled right after `connect`); false on a fresh session.
   */
  readonly recovered: boolean;
  /** The number of the current reconnection attempt (0 when connected or not retrying). */
  readonly reconnectAttempt: number;
  /** Messages never written (queue limits, age, a full send buffer); each also reported. */
  readonly dropped: number;
  /** Messages waiting unsent: the offline queue, and at-least-once calls waiting for their turn. */
  readonly queued: number;
  /** At-least-once calls not answered yet (the one in flight included). */
  readonly pending: number;

  /** Resolves once the server accepted the connection; rejects with ConnectError on a refusal. */
  connect(): Promise<void>;
  /** Close (1000) and stop reconnecting; pending calls fail, queued emits stay queued. */
  disconnect(): Promise<void>;

  /** Send an event (queued while not connected); false when it was dropped. */
  emit(event: string, ...args: Payload[]): boolean;
  /** Emit asking for an ack; resolves with the server handler's result. */
  call<T = unknown>(event: string, ...args: Payload[]): Promise<T>;
  /** The same as call(). */
  emitWithAck<T = unknown>(event: string, ...args: Payload[]): Promise<T>;
  /** Calls with their own timeout in ms (null: none). */
  timeout(ms: number | null): TimedCalls;
  /** Send the emits made inside `fn` as one batch frame. */
  batch<R>(fn: (client: this) => R): R;

  on<E extends keyof LocalEvents>(event: E, handler: LocalEvents[E]): this;
  on<E extends string>(event: Exclude<E, keyof LocalEvents>, handler: EventHandler): this;
  once<E extends keyof LocalEvents>(event: E, handler: LocalEvents[E]): this;
  once<E extends string>(event: Exclude<E, keyof LocalEvents>, handler: EventHandler): this;
  off(event?: string, handler?: (...args: never[]) => unknown): this;

  toString(): string;
}

export default NanoSocketClient;
