// Compiled with `tsc --noEmit --strict` by test_typescript.py: the declarations (nanosocket.d.ts)
// describe the whole API of nanosocket.js, and wrong uses are refused (see misuse.ts).
import NanoSocketDefault, {
  AckError,
  AckTimeoutError,
  ConnectError,
  ConnectionClosed,
  DeliveryTimeoutError,
  MessageDropped,
  NanoSocketClient,
  reconnectDelay,
  type ConnectionState,
  type DisconnectReason,
  type DropReason,
  type NanoSocketClientOptions,
} from "../../../src/nanosocket/static/nanosocket.js";

const options: NanoSocketClientOptions = {
  autoConnect: false,
  reconnection: true,
  reconnectionAttempts: null,
  reconnectionDelay: 1000,
  reconnectionDelayMax: 30000,
  randomizationFactor: 0.5,
  timeout: 20000,
  auth: { token: "abc", roles: ["admin"], avatar: new Uint8Array([1, 2]) },
  maxQueueSize: 1000,
  maxQueueBytes: 4 * 1024 * 1024,
  maxQueueAge: null,
  ackTimeout: 5000,
  retries: 3,
  heartbeatInterval: 25000,
};

const client: NanoSocketClient = new NanoSocketDefault("/", options);
const other = new NanoSocketClient("wss://example.com/ws");

client
  .on("connect", () => console.log(client.id?.length, client.recovered ? "resumed" : "fresh"))
  .on("disconnect", (reason: DisconnectReason) => console.log(reason))
  .on("reconnecting", (attempt: number) => console.log(attempt + 1))
  .on("connect_error", (error: Error) => console.log(error.message))
  .on("drop", (why: DropReason, event: string) => console.log(why, event))
  .on("chat", (text: string, from: string) => `${from}: ${text}`)
  .once("question", async (n: number) => n * 2)
  .off("chat");

async function main(): Promise<void> {
  await client.connect();
  const state: ConnectionState = client.connectionState;
  const sent: boolean = client.emit("chat", "hi", 1, null, { nested: [true] }, new Uint8Array(4));
  const sum = await client.call<number>("add", 1, 2);
  const same: number = await client.emitWithAck<number>("add", sum, 3);
  const timed: string = await client.timeout(500).call<string>("slow");
  const counted: number = client.batch((c) => {
    c.emit("a", 1);
    c.emit("b", 2);
    return 2;
  });
  const waited: Promise<void> = client.batch(async () => {
    client.emit("c");
  });
  await waited;
  try {
    await client.call("fail");
  } catch (error) {
    if (error instanceof DeliveryTimeoutError) console.log(error.mid, error.copies);
    if (error instanceof MessageDropped) console.log(error.why, error.event, error.code);
    if (error instanceof AckError) console.log(error.data);
    if (error instanceof AckTimeoutError) console.log(error.message);
    if (error instanceof ConnectionClosed) console.log(error.code, error.reason);
    if (error instanceof ConnectError) console.log(error.data);
  }
  const numbers: number[] = [client.queued, client.dropped, client.pending, client.reconnectAttempt];
  const delay: number = reconnectDelay(2, { delay: 1000, delayMax: 30000, randomizationFactor: 0 });
  console.log(state, sent, same, timed, counted, numbers, delay, client.connected, other.url);
  await client.disconnect();
}

void main();
