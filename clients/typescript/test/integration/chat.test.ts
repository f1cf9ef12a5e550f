// The SDK against the real embedded default (started here): what a chat
// app's users see across two edges, a cut connection and a reconnect.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { Switchboard, type MessageFrame, type Room } from "../../src/index.js";
import { type Embedded, Proxy, startEmbedded, until } from "../support/embedded.js";

let server: Embedded;
const clients: Switchboard[] = [];
const proxies: Proxy[] = [];

beforeAll(async () => {
  server = await startEmbedded();
}, 90_000);

afterAll(async () => {
  for (const c of clients) c.close();
  for (const p of proxies) await p.stop();
  await server?.stop();
});

function connect(user: string, url: string): Switchboard {
  const client = new Switchboard({
    urls: [url],
    token: () => server.token(user),
    WebSocket,
    reconnect: { initialDelayMs: 100, maxDelayMs: 500 },
  });
  clients.push(client);
  client.connect();
  return client;
}

/** Joins and records every message the app is given. */
async function joined(client: Switchboard, name: string): Promise<{ room: Room; got: MessageFrame[] }> {
  const room = client.room(name);
  const got: MessageFrame[] = [];
  room.on("message", (m) => got.push(m));
  await room.join();
  return { room, got };
}

let rooms = 0;
const roomName = (what: string) => `sdk-${what}-${process.pid}-${++rooms}`;

/** Alice on the first edge through a proxy that can cut her connection, Bob straight to the second, both in a new room. */
async function cuttableChat(what: string) {
  const cutter = new Proxy(server.ws[0]);
  proxies.push(cutter);
  const alice = connect("alice", await cutter.start());
  const bob = connect("bob", server.ws[1]);
  const name = roomName(what);
  return { cutter, alice, a: await joined(alice, name), b: await joined(bob, name) };
}

describe("the SDK against the embedded default", () => {
  it("two clients on the two edges chat both ways", async () => {
    const name = roomName("chat");
    const alice = connect("alice", server.ws[0]);
    const bob = connect("bob", server.ws[1]);
    const a = await joined(alice, name);
    const b = await joined(bob, name);
    expect(alice.node).not.toBe(bob.node);
    const hi = await a.room.send("hi bob");
    await until(() => b.got.length === 1, "bob gets alice's message");
    const hello = await b.room.send("hello alice");
    await until(() => a.got.length === 2, "alice gets both messages");
    await until(() => b.got.length === 2, "bob gets his own message");
    for (const got of [a.got, b.got]) {
      expect(got.map((m) => [m.seq, m.sender, m.body])).toEqual([
        [1, "alice", "hi bob"],
        [2, "bob", "hello alice"],
      ]);
      expect(got.map((m) => m.id)).toEqual([hi.id, hello.id]);
    }
  });

  it("a send whose connection is cut before its ack is stored once and delivered once", async () => {
    const { cutter, alice, a, b } = await cuttableChat("cut");
    const connections: string[] = [];
    alice.on("connected", (w) => connections.push(w.node));

    cutter.hold(); // the edge's ack (and everything else) stops reaching alice
    const sending = a.room.send("exactly once");
    // The edge took it: bob, on the other edge, has it from Kafka.
    await until(() => b.got.length === 1, "bob gets the message while alice's ack is held");
    cutter.cut();
    const sent = await sending; // re-sent with the same client_id after the reconnect
    expect(connections).toHaveLength(1);
    expect(sent.id).toBe(b.got[0]?.id);

    const after = await a.room.send("after");
    await until(() => b.got.length === 2 && a.got.length === 2, "both get the next message");
    for (const got of [a.got, b.got]) {
      expect(got.map((m) => [m.seq, m.body])).toEqual([
        [1, "exactly once"],
        [2, "after"],
      ]);
    }
    expect(b.got[1]?.id).toBe(after.id);
    const page = await b.room.history();
    expect(page.messages.map((m) => m.body)).toEqual(["after", "exactly once"]);
  });

  it("a reconnect resumes with exactly the messages missed, in order", async () => {
    const { cutter, alice, a, b } = await cuttableChat("resume");
    const rejoins: boolean[] = [];
    a.room.on("joined", (j) => rejoins.push(j.recovered));

    for (const body of ["m1", "m2"]) await b.room.send(body);
    await until(() => a.got.length === 2, "alice gets the first two");
    cutter.refuse(true);
    cutter.cut();
    await until(() => alice.state === "reconnecting", "alice notices the cut");
    for (const body of ["m3", "m4", "m5", "m6", "m7"]) await b.room.send(body);
    cutter.refuse(false);
    await until(() => a.got.length >= 7, "alice gets the missed five after reconnecting");
    await b.room.send("m8");
    await until(() => a.got.length >= 8, "and the next live one");
    expect(a.got.map((m) => m.body)).toEqual(["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8"]);
    expect(a.got.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(rejoins).toEqual([true]);
    expect(a.room.recovered).toBe(true);
  });
});
