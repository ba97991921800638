// The page side of the shared client scenarios (tests/scenarios.py): performs one client step
// with nanosocket.js and returns what it observed, in the table's notation. One page is one client.
import * as ns from "/nanosocket.js";

const HANG_GUARD = 10000;
const RECONNECT = { reconnectionDelay: 100, reconnectionDelayMax: 500, randomizationFactor: 0.5 };

function toNative(value) {
  if (Array.isArray(value)) return value.map(toNative);
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$bytes") {
      const hex = value.$bytes;
      return Uint8Array.from({ length: hex.length / 2 }, (_, i) => parseInt(hex.slice(2 * i, 2 * i + 2), 16));
    }
    return Object.fromEntries(keys.map((key) => [key, toNative(value[key])]));
  }
  return value;
}

function toTable(value) {
  if (value instanceof Uint8Array) return { $bytes: [...value].map((byte) => byte.toString(16).padStart(2, "0")).join("") };
  if (Array.isArray(value)) return value.map(toTable);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, toTable(item)]));
  }
  return value === undefined ? null : value;
}

function observeError(error) {
  const kind = error instanceof TypeError ? "refused" : error.name;
  return { error: kind, message: error.message, data: toTable(error.data ?? null) };
}

function guard(promise, what) {
  let timer;
  const hang = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hang guard: ${what}`)), HANG_GUARD);
  });
  return Promise.race([promise, hang]).finally(() => clearTimeout(timer));
}

/** Events received per name, waited for in order. */
class Inbox {
  constructor() {
    this.items = new Map();
    this.waiters = new Map();
  }
  push(event, args) {
    const waiters = this.waiters.get(event);
    if (waiters && waiters.length) waiters.shift()(args);
    else this.items.set(event, [...(this.items.get(event) || []), args]);
  }
  next(event) {
    const items = this.items.get(event);
    if (items && items.length) return Promise.resolve(items.shift());
    return new Promise((resolve) => this.waiters.set(event, [...(this.waiters.get(event) || []), resolve]));
  }
}

let client = null;
let inbox = new Inbox();
const served = [];
let listen = [];

async function make(options) {
  if (client !== null) await client.disconnect();
  inbox = new Inbox();
  client = new ns.NanoSocketClient("/", { ...RECONNECT, ...options });
  for (const event of [...listen, "disconnect", "connect_error"]) client.on(event, (...args) => inbox.push(event, args));
  for (const { event, reply, error, later } of served) {
    const answer = (args) => {
      if (error !== null && error !== undefined) throw new Error(error);
      const value = toNative(reply);
      const plain = value !== null && typeof value === "object" && !Array.isArray(value) && !(value instanceof Uint8Array);
      return plain ? { ...value, args } : value;
    };
    // `later`: a returned Promise that resolves (or rejects) after a macrotask.
    client.on(event, (...args) =>
      later ? new Promise((resolve) => setTimeout(resolve, 0)).then(() => answer(args)) : answer(args),
    );
  }
  window.client = client;
  return client;
}

export async function perform(step) {
  switch (step.op) {
    case "serve":
      served.push(step);
      return {};
    case "create":
      await make({ ...step.options, autoConnect: true });
      return {};
    case "connect": {
      const fresh = await make({ autoConnect: false, auth: step.auth ?? null });
      try {
        await guard(fresh.connect(), "connect");
      } catch (error) {
        return observeError(error);
      }
      return { connected: fresh.connected, id: fresh.id };
    }
    case "wait_connected":
      await guard(client.connect(), "reconnect");
      return { connected: client.connected };
    case "state":
      return { state: client.connectionState, queued: client.queued, dropped: client.dropped };
    case "emit":
      try {
        return { sent: client.emit(step.event, ...toNative(step.args)) };
      } catch (error) {
        return observeError(error);
      }
    case "call": {
      const calls = step.timeout === undefined ? client : client.timeout(step.timeout);
      try {
        return { result: toTable(await guard(calls.call(step.event, ...toNative(step.args)), `call ${step.event}`)) };
      } catch (error) {
        if (error.message.startsWith("hang guard")) throw error;
        return observeError(error);
      }
    }
    case "batch":
      client.batch(() => {
        for (const [event, args] of step.emits) client.emit(event, ...toNative(args));
      });
      return {};
    case "next_event":
      return { args: toTable(await guard(inbox.next(step.event), `event ${step.event}`)) };
    case "next_connect_error": {
      const [error] = await guard(inbox.next("connect_error"), "connect_error");
      return observeError(error);
    }
    case "next_disconnect": {
      const [reason] = await guard(inbox.next("disconnect"), "disconnect");
      return { reason };
    }
    default:
      throw new Error(`unknown step ${step.op}`);
  }
}

export function setListen(events) {
  listen = events;
}

export async function close() {
  if (client !== null) await client.disconnect();
}
export { ns };
