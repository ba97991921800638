// Each line below must be refused by `tsc --strict` (test_typescript.py counts the errors).
import { NanoSocketClient } from "../../../src/nanosocket/static/nanosocket.js";

const client = new NanoSocketClient("/", { reconectionDelay: 5 });
client.on("disconnect", (reason: number) => reason);
const id: string = client.id;
client.emit("date", () => 1);
client.connectionState = "connected";
client.recovered = true;
new NanoSocketClient("/", { retries: "3" });
client.on("drop", (why: number) => why);
new NanoSocketClient("/", { maxQueueAge: "5m" });
