// nanosocket.js: the NanoSocket browser client (a plain ES module, no dependencies, no build step).
//
//   import { NanoSocketClient } from "/nanosocket.js";   // served by every NanoSocket server
//   const client = new NanoSocketClient("/", { auth: { token } });
//   client.on("chat", (text) => console.log(text));
//   client.emit("chat", "hi");
//   const reply = await client.call("join", "lobby");
//
// It speaks docs/protocol.md exactly like the Python client (src/nanosocket/client/client.py)
// and has the same semantics: states, reconnection with backoff, a bounded offline queue,
// acknowledgements both ways, batches, binary msgpack frames, disconnect reasons and
// connection-state recovery (docs/protocol.md §6). Times are in milliseconds (the Python client
// counts seconds). docs/clients.md compares the two.
//
// States (any other transition throws):
//
//   disconnected -> connecting -> connected -> reconnecting -> connecting -> ...
//   connecting -> reconnecting (attempt failed)      any but disconnected -> disconnected

export const VERSION = "0.1.0";
/** The subprotocol a NanoSocket v1 client offers. */
export const V1_SUBPROTOCOL = "nanosocket.v1";
/** Most envelopes one batch frame may carry. */
export const MAX_BATCH = 1000;
/** The largest frame this client writes (the server's default max_payload_length). */
export const MAX_PAYLOAD = 1024 * 1024;
/** Bytes the browser may hold unsent before a send is dropped (the Python client's default). */
export const MAX_BUFFERED = 1024 * 1024;
const MAX_ACK_ID = Number.MAX_SAFE_INTEGER;

/** Events a peer may never emit: each side raises them locally (docs/protocol.md §3). */
export const PEER_RESERVED_EVENTS = Object.freeze(
  new Set([
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "error",
    "connecting",
    "reconnecting",
    "reconnect_failed",
    "drop",
  ]),
);

// ---------------------------------------------------------------------------------- errors
//
//   NanoSocketError
//   ├── ConfigurationError        an option has an invalid value (the message names it)
//   ├── ProtocolError             the server sent something malformed (closeCode)
//   ├── HandshakeError            the WebSocket could not be opened as a v1 connection
//   ├── ConnectTimeoutError       no accepted connection within `timeout`
//   ├── ConnectionClosed          the connection is closed (code, reason)
//   │   ├── ConnectionClosedOK        closed with 1000 or 1001
//   │   └── ConnectionClosedError     closed with an error code or dropped (1006)
//   ├── ConnectError              the server refused the connection (middleware): message, data
//   │       └── MessageDropped        a message was dropped unsent: why, event
//   ├── AckTimeoutError           no acknowledgement within the timeout
//   │   └── DeliveryTimeoutError  an at-least-once call: no reply to any of its copies (mid, copies)
//   └── AckError                  the remote handler answered with an error: message, data

export class NanoSocketError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}
export class ConfigurationError extends NanoSocketError {}
export class ProtocolError extends NanoSocketError {
  constructor(message, closeCode = 1002) {
    super(message);
    this.closeCode = closeCode;
  }
}
export class HandshakeError extends NanoSocketError {}
export class ConnectTimeoutError extends NanoSocketError {}
export class ConnectionClosed extends NanoSocketError {
  constructor(code, reason = "") {
    super(`connection closed: ${code} ${reason}`.trimEnd());
    this.code = code;
    this.reason = reason;
  }
}
export class ConnectionClosedOK extends ConnectionClosed {}
export class ConnectionClosedError extends ConnectionClosed {}
export class ConnectError extends NanoSocketError {
  constructor(message, data = null) {
    super(message);
    this.data = data;
  }
}
export class AckTimeoutError extends NanoSocketError {}

/** What a dropped message's error says, by its cause (`why`). */
const DROP_REASONS = Object.freeze({
  queue_full: "pushed out of the full offline queue (maxQueueSize)",
  queue_bytes: "pushed out of the offline queue over maxQueueBytes",
  expired: "waited in the offline queue longer than maxQueueAge",
  send_buffer_full: "not sent: the send buffer is full",
});

/**
 * A message was dropped without being sent (the server never saw it): `why` is "queue_full"
 * (over maxQueueSize, the oldest go first), "queue_bytes" (over maxQueueBytes), "expired"
 * (waited longer than maxQueueAge) or "send_buffer_full"; `event` its event name.
 */
export class MessageDropped extends ConnectionClosedError {
  constructor(why, event) {
    super(1006, `'${event}' dropped unsent: ${DROP_REASONS[why] ?? why}`);
    this.why = why;
    this.event = event;
  }
}

/**
 * An at-least-once call got no reply to any of its `copies` (its retries are spent, or another
 * copy would reach the server after its de-duplication window): the server may or may not have
 * run the handler. `mid` is the message id.
 */
export class DeliveryTimeoutError extends AckTimeoutError {
  constructor(message, { mid, copies }) {
    super(message);
    this.mid = mid;
    this.copies = copies;
  }
}
export class AckError extends NanoSocketError {
  constructor(message, data = null) {
    super(message);
    this.data = data;
  }
}

/** The ConnectionClosed subclass instance that matches `code`. */
export function connectionClosed(code, reason = "") {
  return code === 1000 || code === 1001
    ? new ConnectionClosedOK(code, reason)
    : new ConnectionClosedError(code, reason);
}

// ---------------------------------------------------------------------------------- msgpack
//
// The binary frames' codec (https://msgpack.org): what the server's msgpack reads and writes.
// Uint8Array / ArrayBuffer / other views encode as `bin` and decode as Uint8Array; extension
// types are refused both ways (docs/protocol.md §2).

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });
const MAX_DEPTH = 1024;

class Writer {
  constructor() {
    this.bytes = new Uint8Array(256);
    this.view = new DataView(this.bytes.buffer);
    this.length = 0;
  }
  reserve(n) {
    if (this.length + n <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < this.length + n) size *= 2;
    const bytes = new Uint8Array(size);
    bytes.set(this.bytes.subarray(0, this.length));
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer);
  }
  u8(value) {
    this.reserve(1);
    this.bytes[this.length++] = value;
  }
  u16(value) {
    this.reserve(2);
    this.view.setUint16(this.length, value);
    this.length += 2;
  }
  u32(value) {
    this.reserve(4);
    this.view.setUint32(this.length, value);
    this.length += 4;
  }
  put(bytes) {
    this.reserve(bytes.length);
    this.bytes.set(bytes, this.length);
    this.length += bytes.length;
  }
}

function toBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
}

function isBinary(value) {
  return value instanceof ArrayBuffer || ArrayBuffer.isView(value);
}

function packInt(w, value) {
  if (value >= 0) {
    if (value < 0x80) w.u8(value);
    else if (value < 0x100) (w.u8(0xcc), w.u8(value));
    else if (value < 0x10000) (w.u8(0xcd), w.u16(value));
    else if (value < 0x100000000) (w.u8(0xce), w.u32(value));
    else (w.u8(0xcf), w.u32(Math.floor(value / 0x100000000)), w.u32(value >>> 0));
  } else if (value >= -0x20) w.u8(value & 0xff);
  else if (value >= -0x80) (w.u8(0xd0), w.u8(value & 0xff));
  else if (value >= -0x8000) (w.u8(0xd1), w.u16(value & 0xffff));
  else if (value >= -0x80000000) (w.u8(0xd2), w.u32(value >>> 0));
  else {
    w.u8(0xd3);
    w.reserve(8);
    w.view.setBigInt64(w.length, BigInt(value));
    w.length += 8;
  }
}

function packLength(w, length, fix, fixMax, small, medium, large) {
  if (fix !== null && length <= fixMax) w.u8(fix | length);
  else if (small !== null && length < 0x100) (w.u8(small), w.u8(length));
  else if (length < 0x10000) (w.u8(medium), w.u16(length));
  else (w.u8(large), w.u32(length));
}

function pack(w, value, depth) {
  if (depth > MAX_DEPTH) throw new TypeError("value nested too deeply for msgpack");
  if (value === null || value === undefined) return w.u8(0xc0);
  switch (typeof value) {
    case "boolean":
      return w.u8(value ? 0xc3 : 0xc2);
    case "number":
      if (Number.isSafeInteger(value)) return packInt(w, value);
      if (!Number.isFinite(value)) return w.u8(0xc0); // as JSON.stringify does
      w.u8(0xcb);
      w.reserve(8);
      w.view.setFloat64(w.length, value);
      w.length += 8;
      return;
    case "bigint":
      if (value < -(2n ** 63n) || value >= 2n ** 64n) throw new TypeError("BigInt out of msgpack range");
      w.reserve(9);
      if (value < 0n) (w.u8(0xd3), w.view.setBigInt64(w.length, value));
      else (w.u8(0xcf), w.view.setBigUint64(w.length, value));
      w.length += 8;
      return;
    case "string": {
      const bytes = textEncoder.encode(value);
      packLength(w, bytes.length, 0xa0, 31, 0xd9, 0xda, 0xdb);
      return w.put(bytes);
    }
    case "object":
      break;
    default:
      throw new TypeError(`cannot encode a ${typeof value} in msgpack`);
  }
  if (isBinary(value)) {
    const bytes = toBytes(value);
    packLength(w, bytes.length, null, 0, 0xc4, 0xc5, 0xc6);
    return w.put(bytes);
  }
  if (Array.isArray(value)) {
    packLength(w, value.length, 0x90, 15, null, 0xdc, 0xdd);
    for (const item of value) pack(w, item, depth + 1);
    return;
  }
  if (typeof value.toJSON === "function") return pack(w, value.toJSON(), depth + 1);
  const entries =
    value instanceof Map
      ? [...value.entries()].map(([key, item]) => [String(key), item])
      : Object.entries(value).filter(([, item]) => item !== undefined && typeof item !== "function");
  packLength(w, entries.length, 0x80, 15, null, 0xde, 0xdf);
  for (const [key, item] of entries) {
    pack(w, key, depth + 1);
    pack(w, item, depth + 1);
  }
}

/** The msgpack encoding of `value` (binary data as `bin`). Throws TypeError for what it cannot encode. */
export function msgpackEncode(value) {
  const w = new Writer();
  pack(w, value, 0);
  return w.bytes.slice(0, w.length);
}

class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }
  need(n) {
    if (this.pos + n > this.bytes.length) throw new ProtocolError("truncated msgpack data", 1003);
    const at = this.pos;
    this.pos += n;
    return at;
  }
  u8() {
    return this.bytes[this.need(1)];
  }
  u16() {
    return this.view.getUint16(this.need(2));
  }
  u32() {
    return this.view.getUint32(this.need(4));
  }
  take(n) {
    const at = this.need(n);
    return this.bytes.subarray(at, at + n);
  }
}

function safe(big) {
  const value = Number(big);
  if (!Number.isSafeInteger(value)) throw new ProtocolError("msgpack integer beyond 2^53", 1003);
  return value;
}

function unpackString(r, length) {
  try {
    return textDecoder.decode(r.take(length));
  } catch {
    throw new ProtocolError("msgpack string is not valid UTF-8", 1003);
  }
}

function unpackArray(r, length, depth) {
  const items = new Array(length);
  for (let i = 0; i < length; i++) items[i] = unpack(r, depth + 1);
  return items;
}

function unpackMap(r, length, depth) {
  const object = {};
  for (let i = 0; i < length; i++) {
    const key = unpack(r, depth + 1);
    if (typeof key !== "string") throw new ProtocolError("msgpack map keys must be strings", 1003);
    // defineProperty: a "__proto__" key is data, never the prototype.
    Object.defineProperty(object, key, {
      value: unpack(r, depth + 1),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return object;
}

function unpack(r, depth) {
  if (depth > MAX_DEPTH) throw new ProtocolError("msgpack data nested too deeply", 1003);
  const byte = r.u8();
  if (byte < 0x80) return byte;
  if (byte < 0x90) return unpackMap(r, byte & 0x0f, depth);
  if (byte < 0xa0) return unpackArray(r, byte & 0x0f, depth);
  if (byte < 0xc0) return unpackString(r, byte & 0x1f);
  if (byte >= 0xe0) return byte - 0x100;
  switch (byte) {
    case 0xc0:
      return null;
    case 0xc2:
      return false;
    case 0xc3:
      return true;
    case 0xc4:
      return r.take(r.u8()).slice();
    case 0xc5:
      return r.take(r.u16()).slice();
    case 0xc6:
      return r.take(r.u32()).slice();
    case 0xca:
      return r.view.getFloat32(r.need(4));
    case 0xcb:
      return r.view.getFloat64(r.need(8));
    case 0xcc:
      return r.u8();
    case 0xcd:
      return r.u16();
    case 0xce:
      return r.u32();
    case 0xcf:
      return safe(r.view.getBigUint64(r.need(8)));
    case 0xd0:
      return r.view.getInt8(r.need(1));
    case 0xd1:
      return r.view.getInt16(r.need(2));
    case 0xd2:
      return r.view.getInt32(r.need(4));
    case 0xd3:
      return safe(r.view.getBigInt64(r.need(8)));
    case 0xd9:
      return unpackString(r, r.u8());
    case 0xda:
      return unpackString(r, r.u16());
    case 0xdb:
      return unpackString(r, r.u32());
    case 0xdc:
      return unpackArray(r, r.u16(), depth);
    case 0xdd:
      return unpackArray(r, r.u32(), depth);
    case 0xde:
      return unpackMap(r, r.u16(), depth);
    case 0xdf:
      return unpackMap(r, r.u32(), depth);
    default: // 0xc1 (never used) and the extension types 0xc7-0xc9, 0xd4-0xd8
      throw new ProtocolError("binary frame uses a msgpack extension type (or byte 0xc1)", 1003);
  }
}

/** Decode one msgpack value (binary as Uint8Array); ProtocolError (1003) for garbage or extensions. */
export function msgpackDecode(data) {
  const r = new Reader(toBytes(data));
  const value = unpack(r, 0);
  if (r.pos !== r.bytes.length) throw new ProtocolError("trailing bytes after the msgpack value", 1003);
  return value;
}

// --------------------------------------------------------------------------------- envelopes

function containsBinary(value, depth = 0) {
  if (value === null || typeof value !== "object") return false;
  if (isBinary(value)) return true;
  if (depth > 64) return false;
  if (Array.isArray(value)) return value.some((item) => containsBinary(item, depth + 1));
  const values = value instanceof Map ? [...value.values()] : Object.values(value);
  return values.some((item) => containsBinary(item, depth + 1));
}

/** Encode one envelope: `{payload, binary}`, JSON text unless an argument holds binary data. */
export function encodeEnvelope(envelope) {
  if (containsBinary(envelope)) return { payload: msgpackEncode(envelope), binary: true };
  const payload = JSON.stringify(envelope);
  if (payload === undefined) throw new TypeError("cannot encode the envelope as JSON");
  return { payload, binary: false };
}

/** A received frame's value: JSON for text (InvalidPayload: 1007), msgpack for binary (1003). */
export function decodeFrame(data) {
  if (typeof data === "string") {
    try {
      return JSON.parse(data);
    } catch (error) {
      throw new ProtocolError(`malformed JSON: ${error.message}`, 1007);
    }
  }
  return msgpackDecode(data);
}

/** The envelopes of one decoded frame (a batch or a single envelope). */
export function iterEnvelopes(decoded) {
  if (Array.isArray(decoded)) {
    if (decoded.length > MAX_BATCH) throw new ProtocolError(`batch of more than ${MAX_BATCH} envelopes`, 1008);
    return decoded;
  }
  return [decoded];
}

/** Validate one envelope: `{event, args, ack, error}` (event null for an ack reply); 1008 if malformed. */
export function readEnvelope(envelope) {
  if (envelope === null || typeof envelope !== "object" || Array.isArray(envelope) || isBinary(envelope)) {
    throw new ProtocolError("an envelope must be an object", 1008);
  }
  let ack = envelope.ack;
  if (ack === undefined) ack = null;
  if (ack !== null && !(Number.isInteger(ack) && ack >= 0 && ack <= MAX_ACK_ID)) {
    throw new ProtocolError("ack must be a non-negative integer", 1008);
  }
  const data = envelope.data;
  const args = data === undefined ? [] : Array.isArray(data) ? data : [data];
  const event = envelope.event;
  if (event === undefined || event === null) {
    if (ack === null) throw new ProtocolError("an envelope needs an event name or an ack id", 1008);
    const error = envelope.error === undefined ? null : envelope.error;
    if (error !== null && (typeof error !== "object" || Array.isArray(error))) {
      throw new ProtocolError("an ack error must be an object", 1008);
    }
    return { event: null, args, ack, error };
  }
  if (typeof event !== "string" || !event || event.includes("\0")) {
    throw new ProtocolError(`invalid event name ${JSON.stringify(event)}`, 1008);
  }
  return { event, args, ack, error: null };
}

function repr(value) {
  return typeof value === "string" ? `'${value}'` : String(value);
}

/** Throws TypeError unless `event` may be emitted (not reserved, not a `$` name). */
export function checkEmitName(event) {
  if (typeof event !== "string" || !event || event[0] === "$" || PEER_RESERVED_EVENTS.has(event) || event.includes("\0")) {
    throw new TypeError(
      `cannot emit ${repr(event)}: event names are non-empty strings without NUL, not starting ` +
        `with '$' and not one of ${[...PEER_RESERVED_EVENTS].sort().join(", ")}`,
    );
  }
  return event;
}

function checkListenName(event) {
  if (typeof event !== "string" || !event || event.includes("\0") || event[0] === "$") {
    throw new TypeError(
      `cannot listen to ${repr(event)}: event names are non-empty strings without NUL ` +
        "('$' names belong to the protocol)",
    );
  }
  return event;
}

// ------------------------------------------------------------------ reconnection and reasons

/** The `disconnect` reason of a connection that ended with `code` without our asking. */
export function disconnectReason(code) {
  switch (code) {
    case 1000:
    case 1005:
      return "server disconnect";
    case 1001:
      return "server shutting down";
    case 1006:
      return "transport close";
    case 1011:
      return "ping timeout";
    case 1008:
      return "policy violation";
    default:
      return "transport error";
  }
}

// Losses worth a reconnection: a server that closed on purpose (1000) or for a policy (1008)
// would only do it again.
const RETRIED = new Set(["server shutting down", "transport close", "ping timeout", "transport error"]);

/**
 * Milliseconds to wait before reconnection attempt `attempt` (1, 2, ...):
 * `min(delay * 2**(attempt-1), delayMax)`, randomized by up to `randomizationFactor` of itself
 * either way, and kept within `0 .. delayMax` (the Python client's `reconnect_delay`).
 */
export function reconnectDelay(attempt, { delay, delayMax, randomizationFactor, rand = Math.random }) {
  if (!(attempt >= 1)) throw new RangeError(`attempts are numbered from 1, got ${attempt}`);
  let base = Math.min(delay * 2 ** Math.min(attempt - 1, 64), delayMax);
  if (randomizationFactor) base += base * randomizationFactor * (2 * rand() - 1);
  return Math.min(Math.max(base, 0), delayMax);
}

const TRANSITIONS = {
  disconnected: ["connecting"],
  connecting: ["connected", "reconnecting", "disconnected"],
  connected: ["reconnecting", "disconnected"],
  reconnecting: ["connecting", "disconnected"],
};

// ---------------------------------------------------------------------------------- options

const DEFAULTS = Object.freeze({
  autoConnect: true, // start connecting at once (in the constructor)
  reconnection: true, // reconnect after an unexpected loss, and retry a failed first connect
  reconnectionAttempts: null, // attempts in a row before `reconnect_failed`; null: no limit
  reconnectionDelay: 1000, // ms before the first reconnection attempt; doubled for each further one
  reconnectionDelayMax: 30000, // longest wait between two attempts, ms
  randomizationFactor: 0.5, // jitter: each wait randomized by up to this fraction of itself (0..1)
  timeout: 20000, // ms one connection attempt (WebSocket open and the server's $connect) may take
  auth: null, // any JSON value sent with $connect; the server's middleware reads handshake.auth
  maxQueueSize: 1000, // messages waiting unsent (offline, or in the line); the oldest is dropped (0: none)
  maxQueueBytes: 4 * 1024 * 1024, // bytes (encoded) of them; over it the oldest is dropped
  maxQueueAge: 300000, // ms a message may wait unsent before it is dropped; null: no limit
  ackTimeout: null, // default ms call() waits for its acknowledgement; null waits as long as it takes
  retries: 0, // copies of a call sent again when no reply came within ackTimeout (0: at most once)
  heartbeatInterval: 25000, // ms of silence before a $ping, and then before the link is dead; null: off
});

function fail(name, expected, value) {
  let shown;
  try {
    shown = JSON.stringify(value);
  } catch {
    shown = String(value);
  }
  throw new ConfigurationError(`${name} must be ${expected}, got ${shown === undefined ? String(value) : shown}`);
}

function checkBool(options, name) {
  if (typeof options[name] !== "boolean") fail(name, "true or false", options[name]);
}

function checkCount(options, name, { nullable = false } = {}) {
  const value = options[name];
  if (nullable && value === null) return;
  if (!Number.isSafeInteger(value) || value < 0) fail(name, `an integer >= 0${nullable ? " or null" : ""}`, value);
}

function checkMs(options, name, { zero = false, nullable = false } = {}) {
  const value = options[name];
  if (nullable && value === null) return;
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || (!zero && value === 0)) {
    fail(name, `a number of milliseconds ${zero ? ">= 0" : "> 0"}${nullable ? " or null" : ""}`, value);
  }
}

/** Validated options (defaults filled in); ConfigurationError names an unknown or invalid one. */
export function clientOptions(given = {}) {
  if (given === null || typeof given !== "object") fail("options", "an object", given);
  const unknown = Object.keys(given).filter((name) => !(name in DEFAULTS)).sort();
  if (unknown.length) throw new ConfigurationError(`unknown client option(s): ${unknown.join(", ")}`);
  const options = { ...DEFAULTS };
  for (const [name, value] of Object.entries(given)) if (value !== undefined) options[name] = value;
  checkBool(options, "autoConnect");
  checkBool(options, "reconnection");
  checkCount(options, "reconnectionAttempts", { nullable: true });
  checkMs(options, "reconnectionDelay", { zero: true });
  checkMs(options, "reconnectionDelayMax", { zero: true });
  if (options.reconnectionDelayMax < options.reconnectionDelay) {
    throw new ConfigurationError(
      `reconnectionDelayMax (${options.reconnectionDelayMax}) must not be less than ` +
        `reconnectionDelay (${options.reconnectionDelay})`,
    );
  }
  const factor = options.randomizationFactor;
  if (typeof factor !== "number" || !(factor >= 0 && factor <= 1)) fail("randomizationFactor", "a number from 0 to 1", factor);
  checkMs(options, "timeout");
  checkCount(options, "maxQueueSize");
  if (!Number.isSafeInteger(options.maxQueueBytes) || options.maxQueueBytes <= 0) {
    fail("maxQueueBytes", "an integer > 0", options.maxQueueBytes);
  }
  checkMs(options, "maxQueueAge", { nullable: true });
  checkMs(options, "ackTimeout", { nullable: true });
  checkCount(options, "retries");
  if (options.retries > 0 && options.ackTimeout === null) {
    throw new ConfigurationError("retries needs ackTimeout: the ms each copy waits for its reply before the next");
  }
  if (options.heartbeatInterval === 0) options.heartbeatInterval = null;
  checkMs(options, "heartbeatInterval", { nullable: true });
  try {
    encodeEnvelope({ event: "$connect", data: [options.auth] });
  } catch {
    fail("auth", "a JSON (or msgpack) value", options.auth);
  }
  return Object.freeze(options);
}

/** The ws:// or wss:// URL a client connects to: http(s) URLs are mapped, relative ones resolved. */
export function normalizeUrl(url) {
  if (url === undefined || url === null) url = "/";
  if (typeof url !== "string") fail("url", "a string", url);
  let parsed;
  try {
    const base = globalThis.location !== undefined ? globalThis.location.href : undefined;
    parsed = base === undefined ? new URL(url) : new URL(url, base);
  } catch {
    fail("url", "a ws://, wss://, http:// or https:// URL (or a path)", url);
  }
  if (parsed.protocol === "http:") parsed.protocol = "ws:";
  else if (parsed.protocol === "https:") parsed.protocol = "wss:";
  if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
    fail("url", "a ws://, wss://, http:// or https:// URL (or a path)", url);
  }
  parsed.hash = "";
  return parsed.href;
}

// ------------------------------------------------------------------------------------ client

function deferred() {
  let resolve, reject;
  const promise = new Promise((yes, no) => {
    resolve = yes;
    reject = no;
  });
  // Nobody may be waiting (autoConnect): no "uncaught (in promise)" for that.
  promise.catch(() => {});
  return { promise, resolve, reject, settled: false };
}

function unpackResults(args) {
  if (args.length === 1) return args[0];
  if (args.length === 0) return null;
  return args;
}

function errorMessage(error) {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

function errorType(error) {
  return error instanceof Error ? error.name : typeof error;
}

// A browser may close with 1000 or 3000-4999 only: where the Python client closes with a
// protocol code (1002, 1003, 1007, 1008...), this client closes with 4000 + (code - 1000).
function browserCloseCode(code) {
  return code === 1000 || (code >= 3000 && code <= 4999) ? code : 4000 + (code % 1000);
}

/**
 * The random part of this client's message ids (`mid`): 96 bits from the platform's CSPRNG,
 * base64url. Each id is this prefix, "-" and a counter: unique for the client's lifetime.
 */
function messageIdPrefix() {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(12));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_");
}

/** Bytes of `text` in UTF-8 (what maxQueueBytes counts), without encoding it. */
function utf8Length(text) {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code >= 0x80) bytes += code < 0x800 || (code >= 0xdc00 && code < 0xe000) ? 1 : 2;
  }
  return bytes;
}

/**
 * An encoded envelope on its way out; `pending` is the reply of a call (`ack`). An at-least-once
 * call also has its message id (`mid`), `retries` and per-copy `timeout`, when it was first sent
 * (`firstSent`: null while it waits), its `copies` and `timeouts` so far, and its copy's `timer`.
 */
class Outgoing {
  constructor(event, payload, binary, ack = null, pending = null) {
    this.event = event;
    this.payload = payload;
    this.binary = binary;
    this.ack = ack;
    this.pending = pending;
    this.madeAt = Date.now();
    this._size = binary ? payload.length : null; // text: counted when it has to wait (size)
    this.mid = null;
    this.retries = 0;
    this.timeout = 0;
    this.firstSent = null;
    this.copies = 0;
    this.timeouts = 0;
    this.timer = null;
  }
  /** Bytes of the payload (what maxQueueBytes counts). */
  get size() {
    if (this._size === null) this._size = utf8Length(this.payload);
    return this._size;
  }
  /** A call whose caller stopped waiting (timed out), or that was answered or failed. */
  get abandoned() {
    return this.pending !== null && this.pending.settled;
  }
}

// ------------------------------------------------------------------------------ the outbox
//
// What waits to be written, by the rules of the Python client's outbox
// (src/nanosocket/client/outbox.py):
//
// * Emits and calls made while not connected wait in the queue, in order, and are written right
//   after the next $connect.
// * At-least-once calls (`retries`) wait in the line: its head is the one message in flight; the
//   next is sent when the head is answered or given up, so the server commits them in order
//   (docs/protocol.md §7). Each copy of the head waits `timeout` ms for its reply; then another
//   copy (the same envelope: same mid, same ack id) is sent, up to `retries` more. A copy cut
//   short by a lost connection is sent again after the next $connect without counting. No copy
//   is sent later than the server's de-duplication window minus `timeout` after the first, nor
//   to a server that announced no window (DeliveryTimeoutError instead).
//
// maxQueueSize, maxQueueBytes and maxQueueAge bound what waits unsent in either; over them the
// oldest waiting message goes first, and nothing goes silently: a call rejects with
// MessageDropped, an emit is counted in `dropped` and told to the `drop` handlers.

class Outbox {
  /** `client.settle(item, error)` fails a call; `client.reportDrop(why, event)` tells the drop handlers. */
  constructor(options, client) {
    this.options = options;
    this.client = client;
    this.queue = [];
    this.line = [];
    this.waitingInLine = 0; // line items never sent yet: they count against the limits
    this.bytes = 0; // of the payloads waiting unsent (queue and line)
    this.inFlight = false;
    this.sender = null; // writes one copy of the line's head while connected
    this.sweeper = null;
    this.prefix = messageIdPrefix();
    this.counter = 0;
    /** Messages dropped unsent (limits, age, a full send buffer). */
    this.dropped = 0;
    /** The server's de-duplication window in ms, from its answer to $connect (null: none). */
    this.window = null;
  }

  /** Messages waiting unsent. */
  get queued() {
    return this.queue.length + this.waitingInLine;
  }
  /** At-least-once calls not answered yet (the one in flight included). */
  get pending() {
    return this.line.length;
  }

  newMid() {
    this.counter += 1;
    return `${this.prefix}-${this.counter}`;
  }

  // ------------------------------------------------------------------- queue

  /** Keep an emit or a call for the next connection; false when it was dropped. */
  enqueue(item) {
    if (!this.admit(item)) return false;
    this.queue.push(item);
    this.bytes += item.size;
    this.sweepLater();
    return true;
  }

  /** Everything queued, in order, to be written now (expired messages are dropped). */
  takeQueue() {
    this.sweep();
    const items = this.queue;
    this.queue = [];
    for (const item of items) this.bytes -= item.size;
    return items;
  }

  // -------------------------------------------------------------------- line

  /** Line up an at-least-once call (mid, ack, pending, retries and timeout set). */
  submit(item) {
    if ((this.line.length || this.sender === null) && !this.admit(item)) return;
    this.line.push(item);
    this.waitingInLine += 1;
    this.bytes += item.size;
    this.pump();
    this.sweepLater();
  }

  /** Send a copy of the head when connected and none is in flight. */
  pump() {
    const line = this.line;
    while (line.length && this.sender !== null && !this.inFlight) {
      const head = line[0];
      if (head.abandoned) {
        this.popHead();
        continue;
      }
      const now = Date.now();
      if (head.firstSent === null) {
        head.firstSent = now;
        this.waitingInLine -= 1;
        this.bytes -= head.size;
      } else if (this.window === null) {
        this.giveUp(head, "the server keeps no message ids, so a copy could run its handler twice");
        continue;
      } else if (this.tooLate(head, now)) {
        this.giveUp(head, "another copy would reach the server after its de-duplication window");
        continue;
      }
      head.copies += 1;
      this.inFlight = true;
      // A copy a full send buffer refused counts as one without a reply: the next follows.
      this.sender(head);
      head.timer = setTimeout(() => this.noReply(head), head.timeout);
    }
  }

  noReply(item) {
    item.timer = null;
    if (this.line[0] !== item || item.abandoned) return;
    this.inFlight = false;
    item.timeouts += 1;
    if (item.timeouts > item.retries) {
      const copies = `${item.copies} cop${item.copies === 1 ? "y" : "ies"}`;
      this.giveUp(item, `no reply to ${copies} within ${item.timeout} ms each`);
    }
    this.pump();
  }

  tooLate(item, now) {
    return this.window !== null && item.firstSent !== null && now - item.firstSent > this.window - item.timeout;
  }

  /** Fail the head as unconfirmed (the server may have run it); the next goes on. */
  giveUp(item, why) {
    const error = new DeliveryTimeoutError(`'${item.event}' unconfirmed: ${why} (message id ${item.mid})`, {
      mid: item.mid,
      copies: item.copies,
    });
    this.client.settle(item, error);
  }

  /** A call is over (answered, failed, or its caller gave up): it holds no place any more. */
  settled(item) {
    const line = this.line;
    if (line[0] === item) {
      this.popHead();
      // After the current step: a settle may come from inside the outbox's own bookkeeping.
      queueMicrotask(() => this.pump());
      return;
    }
    let index = line.indexOf(item);
    if (index !== -1) {
      line.splice(index, 1);
      if (item.firstSent === null) {
        this.waitingInLine -= 1;
        this.bytes -= item.size;
      }
      return;
    }
    index = this.queue.indexOf(item);
    if (index !== -1) {
      this.queue.splice(index, 1);
      this.bytes -= item.size;
    }
  }

  popHead() {
    const item = this.line.shift();
    clearTimeout(item.timer);
    item.timer = null;
    if (item.firstSent === null) {
      this.waitingInLine -= 1;
      this.bytes -= item.size;
    }
    this.inFlight = false;
  }

  // -------------------------------------------------------------- connection

  /** A connection is up: the line goes on (its head's copy is sent again, not counted). */
  connected(sender) {
    this.sender = sender;
    this.pump();
    if (this.line.length) this.sweepLater();
  }

  /** The connection is gone: the copy in flight will be sent again on the next one. */
  disconnected() {
    this.sender = null;
    if (this.inFlight) {
      this.inFlight = false;
      const head = this.line[0];
      clearTimeout(head.timer);
      head.timer = null;
    }
  }

  /** The client stopped: every call waiting (queue and line) fails; emits stay queued. */
  failCalls(error) {
    this.disconnected();
    const line = this.line;
    while (line.length) {
      const item = line[0];
      this.popHead();
      this.client.settle(item, error);
    }
    for (const item of this.queue.filter((queued) => queued.ack !== null)) this.client.settle(item, error);
  }

  // ------------------------------------------------------------------ limits

  /** Make room for `item` (the oldest waiting go first); false when it cannot wait. */
  admit(item) {
    const { maxQueueSize, maxQueueBytes } = this.options;
    if (!maxQueueSize) {
      this.drop(item, "queue_full");
      return false;
    }
    if (item.size > maxQueueBytes) {
      this.drop(item, "queue_bytes");
      return false;
    }
    while (this.queued >= maxQueueSize || this.bytes + item.size > maxQueueBytes) {
      const why = this.queued >= maxQueueSize ? "queue_full" : "queue_bytes";
      const victim = this.oldestWaiting();
      if (victim === null) break;
      this.removeWaiting(victim);
      this.drop(victim, why);
    }
    return true;
  }

  oldestWaiting() {
    const queued = this.queue.length ? this.queue[0] : null;
    const lined = this.line.find((item) => item.firstSent === null) ?? null;
    return queued === null || (lined !== null && lined.madeAt < queued.madeAt) ? lined : queued;
  }

  removeWaiting(item) {
    if (this.queue[0] === item) this.queue.shift();
    else {
      this.line.splice(this.line.indexOf(item), 1);
      this.waitingInLine -= 1;
    }
    this.bytes -= item.size;
  }

  /**
   * Report a message dropped unsent: its call rejects with MessageDropped, an emit goes to the
   * `drop` handlers; both are counted in `dropped`.
   */
  drop(item, why) {
    if (item.abandoned) return;
    this.dropped += 1;
    if (item.ack !== null) this.client.settle(item, new MessageDropped(why, item.event));
    else this.client.reportDrop(why, item.event);
  }

  // --------------------------------------------------------------------- age

  sweepLater() {
    const age = this.options.maxQueueAge;
    if (this.sweeper !== null || (age === null && this.window === null)) return;
    this.sweeper = setTimeout(() => this.tick(), Math.min(Math.max((age ?? 60000) / 4, 50), 1000));
  }

  tick() {
    this.sweeper = null;
    this.sweep();
    if (this.queue.length || this.line.length) this.sweepLater();
  }

  /** Drop what waited longer than maxQueueAge; give up a head that can no longer be sent in time. */
  sweep() {
    const now = Date.now();
    const age = this.options.maxQueueAge;
    if (age !== null) {
      while (this.queue.length && now - this.queue[0].madeAt > age) {
        const item = this.queue.shift();
        this.bytes -= item.size;
        this.drop(item, "expired");
      }
      for (const item of this.line.filter((lined) => lined.firstSent === null && now - lined.madeAt > age)) {
        this.removeWaiting(item);
        this.drop(item, "expired");
      }
    }
    if (this.line.length && !this.inFlight) {
      const head = this.line[0];
      if (!head.abandoned && this.tooLate(head, now)) {
        this.giveUp(head, "another copy would reach the server after its de-duplication window");
        this.pump();
      }
    }
  }
}

/** One run of the connection life: connect, read, reconnect, until stopped. */
class Run {
  constructor() {
    this.stopped = false;
    this.done = deferred();
    this._wakers = new Set();
    this._stoppers = new Set();
  }
  /** Call `fn` when the run stops; returns the function that cancels this. */
  onStop(fn) {
    this._stoppers.add(fn);
    return () => this._stoppers.delete(fn);
  }
  /** Resolves after `ms`, or at once when the run stops or `wake()` is called. */
  sleep(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this._wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this._wakers.add(done);
    });
  }
  wake() {
    for (const waker of [...this._wakers]) waker();
  }
  stop() {
    this.stopped = true;
    this.wake();
    for (const fn of [...this._stoppers]) fn();
    this._stoppers.clear();
  }
}

/** A live (or opening) WebSocket and what the client tracks of it. */
class Link {
  constructor(ws) {
    this.ws = ws;
    this.closed = deferred(); // resolves with {code, reason} once, when the link is gone
    this.heard = Date.now();
    this.pinged = false;
    this.timer = null;
  }
  end(code, reason) {
    if (this.closed.settled) return;
    this.closed.settled = true;
    clearTimeout(this.timer);
    const ws = this.ws;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) {
      try {
        ws.close(browserCloseCode(code), reason.slice(0, 120));
      } catch {
        ws.close();
      }
    }
    this.closed.resolve({ code, reason });
  }
}

/**
 * A NanoSocket client: events, acknowledgements, reconnection and an offline queue.
 *
 * `new NanoSocketClient(url, options)`; `url` may be ws(s)://, http(s):// or a path of this
 * page's origin (default "/"). Options (times in ms) are those of the Python client; see
 * DEFAULTS above. Invalid values throw ConfigurationError naming the option.
 */
export class NanoSocketClient {
  constructor(url = "/", options = {}) {
    this._url = normalizeUrl(url);
    this._options = clientOptions(options);
    const hello = encodeEnvelope({ event: "$connect", data: [this._options.auth] });
    this._connectFrame = new Outgoing("$connect", hello.payload, hello.binary);
    this._state = "disconnected";
    /** The socket id the server gave this connection (null while not connected). */
    this.id = null;
    this._handlers = new Map(); // event -> [{fn, once}]
    this._pending = new Map(); // ack -> deferred with its timer
    this._nextAck = 0;
    this._inflight = new Set(); // ack ids of plain calls written on the current connection
    this._outbox = new Outbox(this._options, {
      settle: (item, error) => this._settle(item.ack, null, error),
      reportDrop: (why, event) => this._emitLocal("drop", why, event),
    });
    this._batch = null;
    this._batchDepth = 0;
    this._link = null;
    this._run = null;
    this._ready = null;
    this._reconnectAttempt = 0;
    this._localCause = null;
    // Connection-state recovery: the session the server offered (private id, its log's epoch)
    // and the offset of the last message handled; sent back in the next $connect.
    this._pid = null;
    this._epoch = null;
    this._offset = 0;
    this._recovered = false;
    this._spanChecked = false; // retries * ackTimeout compared with the server's window, once
    this._onOnline = () => this._online();
    this._onOffline = () => this._offline();
    if (this._options.autoConnect) this._start();
  }

  // ------------------------------------------------------------------------- properties

  get url() {
    return this._url;
  }
  get options() {
    return this._options;
  }
  get connected() {
    return this._state === "connected";
  }
  /** 'disconnected' | 'connecting' | 'connected' | 'reconnecting' */
  get connectionState() {
    return this._state;
  }
  /**
   * True when the current connection recovered the previous one's session: the same id and
   * rooms, and the messages sent meanwhile (handled right after `connect`); false on a fresh
   * session, or against a server without recovery (docs/guarantees.md).
   */
  get recovered() {
    return this._recovered;
  }
  /** The number of the current reconnection attempt (0 when connected or not retrying). */
  get reconnectAttempt() {
    return this._reconnectAttempt;
  }
  /**
   * Messages never written: pushed out of the offline queue (over maxQueueSize or
   * maxQueueBytes), expired in it (maxQueueAge), or refused by a full send buffer. Each is also
   * reported: a call rejects with MessageDropped, an emit goes to the `drop` handlers.
   */
  get dropped() {
    return this._outbox.dropped;
  }
  /** Messages waiting unsent: emits and calls in the offline queue, and at-least-once calls waiting for their turn. */
  get queued() {
    return this._outbox.queued;
  }
  /** At-least-once calls not answered yet (the one in flight included). */
  get pending() {
    return this._outbox.pending;
  }

  // ------------------------------------------------------------------------- connecting

  /**
   * Connect (if not connected); resolves once the server has accepted the connection. Rejects
   * with ConnectError when the server refuses, and with the last error when the attempts are
   * spent (`reconnectionAttempts`, or at once without `reconnection`).
   */
  async connect() {
    const run = this._run;
    if (run !== null && (run.stopped || this._state === "disconnected")) await run.done.promise;
    if (this._state === "connected") return;
    if (this._run === null) this._start();
    await this._ready.promise;
  }

  /**
   * Close the connection (1000) and stop reconnecting until `connect()` is called. Pending calls
   * fail with ConnectionClosed; queued emits stay queued for the next connect.
   */
  async disconnect() {
    const run = this._run;
    if (run === null) {
      this._outbox.failCalls(new ConnectionClosedOK(1000, "client disconnect"));
      return;
    }
    run.stop();
    this._pid = null; // a deliberate disconnect ends the session
    const link = this._link;
    if (link !== null) link.end(1000, "client disconnect");
    await run.done.promise;
  }

  // ---------------------------------------------------------------------------- sending

  /**
   * Send `event` with `args`; while not connected, queue it for the next connection. False when
   * the message was dropped (a full send buffer, or `maxQueueSize: 0`). Arguments holding binary
   * data (Uint8Array, ArrayBuffer...) go as one msgpack frame.
   */
  emit(event, ...args) {
    checkEmitName(event);
    const { payload, binary } = encodeEnvelope({ event, data: args });
    return this._sendOrQueue(new Outgoing(event, payload, binary));
  }

  /**
   * Emit `event` asking for an acknowledgement; resolves with the server handler's result (one
   * result as is, none as null, several as an array). Rejects with AckTimeoutError after
   * `ackTimeout` ms, AckError when the server's handler raised, ConnectionClosed when the
   * connection ends first. While not connected the call is queued; its timeout runs from now.
   * With `retries` > 0 the call is at least once: the timeout is per attempt (from each write)
   * and an unacknowledged call is sent again (see "at-least-once calls" below); it rejects only
   * once the retries are spent, with AckTimeoutError or ConnectionClosed saying so.
   */
  call(event, ...args) {
    return this._call(this._options.ackTimeout, event, args);
  }

  /** The same as call() (Socket.IO's name). */
  emitWithAck(event, ...args) {
    return this._call(this._options.ackTimeout, event, args);
  }

  /** `client.timeout(ms).call(event, ...args)`: a call with its own timeout (null: none). */
  timeout(ms) {
    if (ms !== null && !(typeof ms === "number" && ms > 0 && Number.isFinite(ms))) {
      throw new RangeError(`timeout must be a positive number of milliseconds or null, got ${ms}`);
    }
    return {
      call: (event, ...args) => this._call(ms, event, args),
      emitWithAck: (event, ...args) => this._call(ms, event, args),
    };
  }

  _call(timeout, event, args) {
    try {
      checkEmitName(event);
    } catch (error) {
      return Promise.reject(error);
    }
    const retries = this._options.retries;
    if (retries > 0 && timeout === null) {
      return Promise.reject(new RangeError("retries needs a timeout: the ms each copy waits for its reply"));
    }
    const ack = this._nextAck;
    this._nextAck = ack < MAX_ACK_ID - 1 ? ack + 1 : 0;
    const mid = retries > 0 ? this._outbox.newMid() : null;
    let encoded;
    try {
      encoded = encodeEnvelope(mid !== null ? { event, data: args, ack, mid } : { event, data: args, ack });
    } catch (error) {
      return Promise.reject(error);
    }
    const pending = deferred();
    const item = new Outgoing(event, encoded.payload, encoded.binary, ack, pending);
    pending.item = item;
    pending.timer = null;
    this._pending.set(ack, pending);
    if (mid !== null) {
      // At least once: lined up in the outbox, which sends its copies and times each.
      item.mid = mid;
      item.retries = retries;
      item.timeout = timeout;
      const collected = this._batch;
      if (collected !== null && collected.length) {
        this._batch = []; // what was collected before the call goes first
        this._deliver(collected);
      }
      this._outbox.submit(item);
      return pending.promise;
    }
    if (timeout !== null) {
      pending.timer = setTimeout(() => this._settle(ack, null, new AckTimeoutError(`no acknowledgement within ${timeout} ms`)), timeout);
    }
    // A dropped call (full queue or send buffer) has its promise rejected already.
    this._sendOrQueue(item, false);
    return pending.promise;
  }

  /** Settle the call `ack` with a result or an error; false when it is no longer pending. */
  _settle(ack, result, error) {
    const pending = this._pending.get(ack);
    if (pending === undefined) return false;
    this._pending.delete(ack);
    this._inflight.delete(ack);
    clearTimeout(pending.timer);
    if (!pending.settled) {
      pending.settled = true;
      if (error !== null) pending.reject(error);
      else pending.resolve(result);
    }
    this._outbox.settled(pending.item);
    return true;
  }

  /**
   * Collect the emits made inside `fn` and send them as one frame holding a JSON array. Batches
   * over MAX_BATCH (or the payload limit) are split; binary emits go as frames of their own, in
   * order. A call made inside sends what was collected first. When `fn` returns a Promise the
   * batch ends when it settles (and batch() returns it); otherwise batch() returns fn's result.
   */
  batch(fn) {
    this._batchDepth += 1;
    if (this._batch === null) this._batch = [];
    let result;
    try {
      result = fn(this);
    } catch (error) {
      this._endBatch();
      throw error;
    }
    if (result !== null && typeof result === "object" && typeof result.then === "function") {
      return Promise.resolve(result).finally(() => this._endBatch());
    }
    this._endBatch();
    return result;
  }

  _endBatch() {
    this._batchDepth -= 1;
    if (this._batchDepth === 0) {
      const collected = this._batch;
      this._batch = null;
      if (collected && collected.length) this._deliver(collected);
    }
  }

  _sendOrQueue(item, batchable = true) {
    const collected = this._batch;
    if (collected !== null) {
      if (batchable) {
        collected.push(item);
        return true;
      }
      if (collected.length) {
        this._batch = [];
        this._deliver(collected);
      }
    }
    return this._deliver([item]);
  }

  /** Write `items` now when connected, else queue them; false if any was dropped. */
  _deliver(items) {
    const link = this._link;
    if (this._state === "connected" && link !== null && link.ws.readyState === WebSocket.OPEN) {
      return this._write(link, items);
    }
    let queued = true;
    for (const item of items) queued = this._enqueue(item) && queued;
    return queued;
  }

  _enqueue(item) {
    return this._outbox.enqueue(item);
  }

  /** Write `items` in order: JSON envelopes grouped in batch frames, binary ones alone. */
  _write(link, items) {
    let run = [];
    let size = 1;
    let written = true;
    for (const item of items) {
      if (item.abandoned) continue;
      const length = item.binary ? item.payload.length : item.payload.length * 3; // UTF-8 bound
      if (run.length && (item.binary || run.length >= MAX_BATCH || size + length + 1 > MAX_PAYLOAD)) {
        written = this._send(link, run) && written;
        run = [];
        size = 1;
      }
      if (item.binary) written = this._send(link, [item]) && written;
      else {
        run.push(item);
        size += length + 1;
      }
    }
    if (run.length) written = this._send(link, run) && written;
    return written;
  }

  /** One frame: a single envelope, or a JSON array of several. */
  _send(link, items) {
    const ws = link.ws;
    if (ws.readyState !== WebSocket.OPEN || ws.bufferedAmount > MAX_BUFFERED) {
      for (const item of items) this._outbox.drop(item, "send_buffer_full");
      return false;
    }
    ws.send(items.length === 1 ? items[0].payload : `[${items.map((item) => item.payload).join(",")}]`);
    for (const item of items) if (item.ack !== null) this._inflight.add(item.ack);
    return true;
  }

  /** One copy of an at-least-once call (one a full send buffer refuses counts as unanswered). */
  _sendCopy(link, item) {
    const ws = link.ws;
    if (ws.readyState === WebSocket.OPEN && ws.bufferedAmount <= MAX_BUFFERED) ws.send(item.payload);
  }

  // ----------------------------------------------------------------------------- events

  /**
   * Register a handler for a server event or a local one (`connect`, `disconnect`, `connecting`,
   * `reconnecting`, `reconnect_failed`, `connect_error`, `error`). A server event asking for an
   * ack is answered by the first handler's return value (or returned Promise) or thrown error.
   */
  on(event, handler) {
    return this._register(event, handler, false);
  }

  /** Register a handler that runs for the next `event` only. */
  once(event, handler) {
    return this._register(event, handler, true);
  }

  /** Remove `handler` from `event`, every handler of `event`, or (no arguments) every handler. */
  off(event, handler) {
    if (event === undefined) this._handlers.clear();
    else if (handler === undefined) this._handlers.delete(event);
    else {
      const handlers = this._handlers.get(event);
      if (handlers !== undefined) {
        const kept = handlers.filter((entry) => entry.fn !== handler);
        if (kept.length) this._handlers.set(event, kept);
        else this._handlers.delete(event);
      }
    }
    return this;
  }

  _register(event, handler, once) {
    checkListenName(event);
    if (typeof handler !== "function") throw new TypeError(`a handler of '${event}' must be a function`);
    // A new array each time: a dispatch loop in progress keeps a stable snapshot.
    this._handlers.set(event, [...(this._handlers.get(event) || []), { fn: handler, once }]);
    return this;
  }

  /** The handlers of `event` for one dispatch (once-handlers are taken out). */
  _take(event) {
    const handlers = this._handlers.get(event);
    if (handlers === undefined) return null;
    if (handlers.some((entry) => entry.once)) {
      const kept = handlers.filter((entry) => !entry.once);
      if (kept.length) this._handlers.set(event, kept);
      else this._handlers.delete(event);
    }
    return handlers;
  }

  /** Run `fn(...args)`; `done(result, error)` when it returns or its Promise settles. */
  _invoke(fn, args, done) {
    let result;
    try {
      result = fn(...args);
    } catch (error) {
      done(undefined, error);
      return;
    }
    if (result !== null && typeof result === "object" && typeof result.then === "function") {
      Promise.resolve(result).then(
        (value) => done(value, null),
        (error) => done(undefined, error === null || error === undefined ? new Error("rejected") : error),
      );
    } else done(result, null);
  }

  /** Run the handlers of a local event; what they throw goes to `error` and the console. */
  _emitLocal(event, ...args) {
    const handlers = this._take(event);
    if (handlers === null) return;
    for (const { fn } of handlers) {
      this._invoke(fn, args, (result, error) => {
        if (error === null) return;
        if (event === "error") console.error("nanosocket: an 'error' handler threw", error);
        else this._handlerFailed(event, error);
      });
    }
  }

  _handlerFailed(event, error) {
    console.error(`nanosocket: handler of '${event}' threw`, error);
    this._emitLocal("error", error);
  }

  // ---------------------------------------------------------------------------- the run

  _transition(state) {
    if (!TRANSITIONS[this._state].includes(state)) {
      throw new Error(`illegal client state transition ${this._state} -> ${state}`);
    }
    this._state = state;
  }

  _start() {
    this._transition("connecting");
    this._ready = deferred();
    const run = (this._run = new Run());
    if (typeof globalThis.addEventListener === "function") {
      globalThis.addEventListener("online", this._onOnline);
      globalThis.addEventListener("offline", this._onOffline);
    }
    // The first attempt starts after the current task, so handlers registered right after the
    // constructor see `connecting` (as the Python client's runner task does).
    queueMicrotask(() => this._runLife(run));
  }

  _mayRetry(attemptsDone) {
    const { reconnection, reconnectionAttempts } = this._options;
    return reconnection && (reconnectionAttempts === null || attemptsDone < reconnectionAttempts);
  }

  async _runLife(run) {
    let error = null;
    try {
      error = await this._lifecycle(run);
    } catch (exc) {
      console.error("nanosocket: the client's connection runner failed", exc);
      error = exc;
    } finally {
      this._finish(run, error);
    }
  }

  /** Connect, read, reconnect, until stopped; return the error that ended it. */
  async _lifecycle(run) {
    const stopped = () => new ConnectionClosedOK(1000, "client disconnect");
    let attempt = 0;
    for (;;) {
      if (run.stopped) return stopped();
      if (this._state === "reconnecting") this._transition("connecting");
      this._emitLocal("connecting");
      let opened;
      try {
        opened = await this._attempt(run);
      } catch (exc) {
        if (run.stopped) return stopped();
        this._emitLocal("connect_error", exc);
        if (exc instanceof ConnectError) return exc;
        if (exc instanceof ConnectionClosed && exc.code === 1008) return exc;
        if (!this._mayRetry(attempt)) {
          if (this._options.reconnection) this._emitLocal("reconnect_failed");
          return exc;
        }
        attempt += 1;
        await this._retry(run, attempt);
        continue;
      }
      attempt = 0;
      this._connected(opened);
      const { code, reason } = await opened.link.closed.promise;
      const closed = connectionClosed(code, reason);
      const why = run.stopped ? "client disconnect" : this._localCause || disconnectReason(code);
      const retry = RETRIED.has(why) && this._mayRetry(0);
      this._lost(closed, why, retry);
      if (!retry) {
        if (RETRIED.has(why) && this._options.reconnection) this._emitLocal("reconnect_failed");
        return closed;
      }
      attempt = 1;
      await this._retry(run, attempt);
    }
  }

  async _retry(run, attempt) {
    if (this._state === "connecting") this._transition("reconnecting");
    this._reconnectAttempt = attempt;
    this._emitLocal("reconnecting", attempt);
    const { reconnectionDelay, reconnectionDelayMax, randomizationFactor } = this._options;
    await run.sleep(
      reconnectDelay(attempt, { delay: reconnectionDelay, delayMax: reconnectionDelayMax, randomizationFactor }),
    );
  }

  /** One attempt within `timeout`: open the WebSocket, send $connect, read the answer. */
  _attempt(run) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this._url, [V1_SUBPROTOCOL]);
      } catch (error) {
        reject(new HandshakeError(`could not open a WebSocket to ${this._url}: ${errorMessage(error)}`));
        return;
      }
      ws.binaryType = "arraybuffer";
      const link = (this._link = new Link(ws));
      let finished = false;
      const finish = (error, value) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        unwatch();
        if (error === null) {
          resolve(value);
          return;
        }
        if (this._link === link) this._link = null;
        link.end(1000, "client disconnect");
        reject(error);
      };
      const timeout = this._options.timeout;
      const timer = setTimeout(
        () => finish(new ConnectTimeoutError(`could not connect to ${this._url} within ${timeout} ms`)),
        timeout,
      );
      // disconnect() during the attempt ends it.
      const unwatch = run.onStop(() => finish(connectionClosed(1000, "client disconnect")));
      ws.onopen = () => {
        if (ws.protocol !== V1_SUBPROTOCOL) {
          finish(new HandshakeError(`the server did not accept the ${V1_SUBPROTOCOL} subprotocol`));
          return;
        }
        ws.send(this._pid === null ? this._connectFrame.payload : this._recoveryFrame().payload);
      };
      ws.onerror = () => {}; // onclose follows, with the code
      ws.onclose = (event) => {
        const code = event.code || 1006;
        finish(connectionClosed(code, event.reason || (code === 1006 ? `could not connect to ${this._url}` : "")));
      };
      ws.onmessage = (event) => {
        link.heard = Date.now();
        let envelopes;
        try {
          envelopes = iterEnvelopes(decodeFrame(event.data));
          for (let index = 0; index < envelopes.length; index++) {
            const { event: name, args } = readEnvelope(envelopes[index]);
            if (name === "$connect") {
              const detail = args[0] !== null && typeof args[0] === "object" ? args[0] : {};
              this._sessionOffered(detail);
              finish(null, { link, id: typeof detail.id === "string" ? detail.id : null, rest: envelopes.slice(index + 1) });
              return;
            }
            if (name === "$connect_error" || name === "connect_error") {
              const detail = args[0] !== null && typeof args[0] === "object" ? args[0] : {};
              // The server closes with 1008 right after its refusal.
              finish(new ConnectError(String(detail.message || "connection refused"), detail.data ?? null));
              return;
            }
            if (name === "$error") this._emitLocal("error", remoteError(args));
            // Nothing else comes before the answer to $connect: ignored.
          }
        } catch (error) {
          if (error instanceof ProtocolError) {
            link.end(error.closeCode, error.message);
            finish(error);
          } else finish(error);
        }
      };
    });
  }

  /**
   * `$connect` asking to recover the session: `[auth, {pid, epoch, offset}]` (a server without
   * recovery reads the auth and ignores the rest).
   */
  _recoveryFrame() {
    const session = { pid: this._pid, epoch: this._epoch, offset: this._offset };
    return encodeEnvelope({ event: "$connect", data: [this._options.auth, session] });
  }

  /**
   * Read the server's answer to `$connect`: its de-duplication window (at-least-once calls) and
   * the recovery part (none from a server without recovery).
   */
  _sessionOffered(answer) {
    this._windowTold(answer.dedup_window);
    const pid = answer.pid;
    this._recovered = answer.recovered === true && this._pid !== null;
    if (typeof pid !== "string") {
      this._pid = this._epoch = null;
      return;
    }
    this._pid = pid;
    if (!this._recovered) {
      // A fresh session: positions count from the server's latest offset.
      this._epoch = typeof answer.epoch === "string" ? answer.epoch : null;
      this._offset = Number.isSafeInteger(answer.offset) ? answer.offset : 0;
    }
  }

  /**
   * The server's de-duplication window (seconds): no copy of an at-least-once call is sent after
   * it; a client whose retries span more is told once (`error`).
   */
  _windowTold(seconds) {
    if (!(typeof seconds === "number" && seconds > 0 && Number.isFinite(seconds))) {
      this._outbox.window = null;
      return;
    }
    const window = (this._outbox.window = seconds * 1000);
    const { retries, ackTimeout } = this._options;
    if (retries > 0 && !this._spanChecked) {
      this._spanChecked = true;
      const span = (retries + 1) * ackTimeout;
      if (span >= window) {
        const error = new ConfigurationError(
          `retries=${retries} with ackTimeout=${ackTimeout} span ${span} ms, not less than the server's ` +
            `de-duplication window (${window} ms): copies that would arrive after it are not sent ` +
            "(DeliveryTimeoutError instead)",
        );
        console.warn(`nanosocket: ${error.message}`);
        this._emitLocal("error", error);
      }
    }
  }

  _connected({ link, id, rest }) {
    this._link = link;
    this.id = id;
    this._reconnectAttempt = 0;
    this._localCause = null;
    this._transition("connected");
    const ws = link.ws;
    ws.onmessage = (event) => this._frame(link, event.data);
    ws.onclose = (event) => link.end(event.code || 1006, event.reason || "");
    this._armHeartbeat(link);
    const items = this._outbox.takeQueue();
    if (items.length) this._write(link, items);
    this._outbox.connected((item) => this._sendCopy(link, item));
    const ready = this._ready;
    if (ready !== null && !ready.settled) {
      ready.settled = true;
      ready.resolve();
    }
    this._emitLocal("connect");
    if (rest.length) this._receiveEnvelopes(link, rest);
  }

  /** Dead-link detection: $ping after `heartbeatInterval` of silence, dead after as long again. */
  _armHeartbeat(link) {
    const interval = this._options.heartbeatInterval;
    if (interval === null) return;
    const check = () => {
      if (link.closed.settled) return;
      const silent = Date.now() - link.heard;
      if (silent < interval) {
        link.timer = setTimeout(check, interval - silent);
      } else if (!link.pinged) {
        link.pinged = true;
        link.pingedAt = Date.now();
        if (link.ws.readyState === WebSocket.OPEN) link.ws.send('{"event":"$ping","data":[]}');
        link.timer = setTimeout(check, interval);
      } else if (Date.now() - link.pingedAt >= interval) {
        this._localCause = "ping timeout";
        link.end(1006, "ping timeout");
      } else {
        link.timer = setTimeout(check, interval - (Date.now() - link.pingedAt));
      }
    };
    link.timer = setTimeout(check, interval);
  }

  _lost(closed, why, retry) {
    this._link = null;
    this.id = null;
    this._failInflight(closed);
    this._outbox.disconnected();
    if (retry) {
      this._transition("reconnecting");
      this._ready = deferred();
    } else {
      this._transition("disconnected");
    }
    this._emitLocal("disconnect", why);
  }

  /** The run ends: whatever it held is released and whoever waits is told. */
  _finish(run, error) {
    const link = this._link;
    this._link = null;
    if (link !== null) link.end(1000, "client disconnect");
    const wasConnected = this._state === "connected";
    if (this._state !== "disconnected") this._transition("disconnected");
    this.id = null;
    this._reconnectAttempt = 0;
    const closed =
      error instanceof ConnectionClosed
        ? error
        : Object.assign(new ConnectionClosedError(1006, `not connected: ${errorMessage(error)}`), { cause: error });
    this._failInflight(closed);
    this._outbox.failCalls(closed);
    const ready = this._ready;
    this._ready = null;
    if (ready !== null && !ready.settled) {
      ready.settled = true;
      ready.reject(error !== null ? error : closed);
    }
    if (this._run === run) {
      this._run = null;
      if (typeof globalThis.removeEventListener === "function") {
        globalThis.removeEventListener("online", this._onOnline);
        globalThis.removeEventListener("offline", this._onOffline);
      }
    }
    run.done.resolve();
    if (wasConnected) this._emitLocal("disconnect", "client disconnect");
  }

  _failInflight(error) {
    const inflight = this._inflight;
    this._inflight = new Set();
    for (const ack of inflight) this._settle(ack, null, error);
  }

  /** The browser went offline: the link is treated as down (and reconnected when back online). */
  _offline() {
    const link = this._link;
    if (this._state === "connected" && link !== null) {
      this._localCause = "transport close";
      link.end(1006, "offline");
    }
  }

  /** The browser is back online: a reconnection waiting for its delay tries now. */
  _online() {
    if (this._run !== null && this._state === "reconnecting") this._run.wake();
  }

  // -------------------------------------------------------------------------- receiving

  _frame(link, data) {
    link.heard = Date.now();
    link.pinged = false;
    if (this._localCause !== null || link.closed.settled) return;
    let decoded;
    try {
      decoded = decodeFrame(data);
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      this._violation(link, error);
      return;
    }
    this._receiveEnvelopes(link, [decoded], true);
  }

  /** The server sent something malformed: close with the error's code (then reconnect). */
  _violation(link, error) {
    console.warn(`nanosocket: closing the connection to ${this._url}: ${error.message}`);
    this._localCause = "transport error";
    link.end(error.closeCode, error.message);
    this._emitLocal("error", error);
  }

  _receiveEnvelopes(link, items, frames = false) {
    try {
      const envelopes = frames ? iterEnvelopes(items[0]) : items;
      for (const envelope of envelopes) {
        this._envelope(link, envelope);
        if (this._localCause !== null) return;
      }
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      this._violation(link, error);
    }
  }

  _envelope(link, envelope) {
    if (envelope !== null && typeof envelope === "object" && Object.hasOwn(envelope, "o")) {
      // A logged message (recovery on): each offset is handled once, in order.
      const offset = envelope.o;
      if (Number.isSafeInteger(offset)) {
        if (offset <= this._offset) return;
        this._offset = offset;
      }
    }
    const { event, args, ack, error } = readEnvelope(envelope);
    if (event === null) {
      if (error !== null) {
        const message = typeof error.message === "string" && error.message ? error.message : "remote handler failed";
        this._settle(ack, null, new AckError(message, error));
      } else this._settle(ack, unpackResults(args), null);
      return;
    }
    if (event[0] === "$" || PEER_RESERVED_EVENTS.has(event)) {
      this._protocolEvent(link, event, args, ack);
      return;
    }
    const handlers = this._take(event);
    if (handlers === null) {
      if (ack !== null) this._sendAckError(link, ack, `no handler for event '${event}'`);
      return;
    }
    let answer = ack;
    for (const { fn } of handlers) {
      if (answer !== null) {
        // The first handler answers the request; the others just run.
        const id = answer;
        this._invoke(fn, args, (result, failure) => this._answer(link, id, event, result, failure));
        answer = null;
      } else {
        this._invoke(fn, args, (result, failure) => failure !== null && this._handlerFailed(event, failure));
      }
    }
  }

  _protocolEvent(link, event, args, ack) {
    if (event === "$error") {
      this._emitLocal("error", remoteError(args));
      return;
    }
    if (event === "$connect" || event === "$pong") return; // a repeated answer, or our heartbeat's
    // A reserved or unknown protocol name is never dispatched (docs/protocol.md §3).
    console.warn(`nanosocket: the server sent the reserved event '${event}'; not dispatched`);
    if (ack !== null) this._sendAckError(link, ack, `event name '${event}' is reserved`);
    this._emitLocal("error", new NanoSocketError(`the server sent the reserved event '${event}'`));
  }

  /** Answer the server's request `ack` on the connection it came on. */
  _answer(link, ack, event, result, error) {
    if (error === null) {
      let encoded;
      try {
        encoded = encodeEnvelope({ ack, data: [result === undefined ? null : result] });
      } catch (exc) {
        error = new TypeError(`handler result cannot be sent: ${errorMessage(exc)}`);
      }
      if (error === null) {
        if (link.ws.readyState === WebSocket.OPEN) link.ws.send(encoded.payload);
        return;
      }
    }
    this._handlerFailed(event, error);
    this._sendAckError(link, ack, errorMessage(error), { type: errorType(error) });
  }

  _sendAckError(link, ack, message, detail = {}) {
    if (link.ws.readyState === WebSocket.OPEN) link.ws.send(JSON.stringify({ ack, error: { message, ...detail } }));
  }

  toString() {
    return `<NanoSocketClient ${this._url} ${this._state} id=${this.id}>`;
  }
}

/** The local `error` for a `$error` message: the server refused one of ours. */
function remoteError(args) {
  const detail = args[0] !== null && typeof args[0] === "object" ? args[0] : {};
  return new NanoSocketError(`the server refused a message: ${detail.message || "message refused"}`);
}

export default NanoSocketClient;
