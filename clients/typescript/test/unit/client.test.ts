import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Switchboard, type SwitchboardOptions } from "../../src/client.js";
import { SwitchboardError } from "../../src/errors.js";
import type { Joined } from "../../src/room.js";
import type { MessageFrame } from "../../src/protocol.js";
import { FakeSocket, LIMITS, message } from "./fake-socket.js";

function client(options: Partial<SwitchboardOptions> = {}): Switchboard {
  return new Switchboard({
    urls: ["ws://a/ws", "ws://b/ws"],
    token: "t0",
    WebSocket: FakeSocket,
    random: () => 0, // first URL, no jitter
    ...options,
  });
}

/** Connects and answers the welcome; returns the socket. */
async function connected(sb: Switchboard, user = "alice"): Promise<FakeSocket> {
  sb.connect();
  await vi.advanceTimersByTimeAsync(0);
  const socket = FakeSocket.last();
  socket.welcome(user);
  return socket;
}

/** Connects, joins room "r" and answers the join with `joined` (a new, empty room by default). */
async function inRoom(sb: Switchboard, joined: Partial<Joined> = {}, user = "alice") {
  const socket = await connected(sb, user);
  const room = sb.room("r");
  void room.join();
  socket.answerJoin(joined);
  return { socket, room };
}

beforeEach(() => {
  vi.useFakeTimers();
  FakeSocket.reset();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("connection", () => {
  it("calls the token provider on every connect and tries the next edge after a drop", async () => {
    let n = 0;
    const sb = client({ token: async () => `tok${++n}` });
    const states: string[] = [];
    sb.on("state", (s) => states.push(s));
    const first = await connected(sb);
    expect(first.url).toBe("ws://a/ws?token=tok1");
    first.serverClose(1006);
    expect(sb.state).toBe("reconnecting");
    await vi.advanceTimersByTimeAsync(0); // random() = 0: no backoff delay
    const second = FakeSocket.last();
    expect(second.url).toBe("ws://b/ws?token=tok2");
    second.welcome();
    expect(states).toEqual(["connecting", "connected", "reconnecting", "connected"]);
  });

  it("backs off with full jitter between failed attempts, and starts over after a welcome", async () => {
    const sb = client({ random: () => 0.5 });
    const delays: (number | null)[] = [];
    sb.on("disconnected", (d) => delays.push(d.reconnectInMs));
    sb.connect();
    await vi.advanceTimersByTimeAsync(0);
    for (let i = 0; i < 4; i++) {
      FakeSocket.last().serverClose(1006);
      await vi.advanceTimersByTimeAsync(delays.at(-1) as number);
    }
    expect(FakeSocket.all).toHaveLength(5);
    FakeSocket.last().welcome();
    FakeSocket.last().serverClose(1006);
    expect(delays).toEqual([250, 500, 1000, 2000, 250]);
  });

  it("on 1012 (draining) reconnects to the next edge within the draining delay, not the backoff", async () => {
    const sb = client({ random: () => 0.99, urls: ["ws://a/ws", "ws://b/ws", "ws://c/ws"] });
    const socket = await connected(sb);
    expect(socket.url).toContain("ws://c/ws");
    const delays: (number | null)[] = [];
    sb.on("disconnected", (d) => delays.push(d.reconnectInMs));
    socket.serverClose(1012, "draining");
    expect(delays).toEqual([990]);
    await vi.advanceTimersByTimeAsync(990);
    expect(FakeSocket.last().url).toContain("ws://a/ws");
  });

  it("on 1009 surfaces the error and does not loop; queued sends are rejected", async () => {
    const sb = client();
    const { socket, room } = await inRoom(sb);
    const sent = room.send("hello");
    const errors: SwitchboardError[] = [];
    sb.on("error", (e) => errors.push(e));
    socket.serverClose(1009, "frame too big");
    await expect(sent).rejects.toMatchObject({ code: "closed" });
    expect(sb.state).toBe("closed");
    expect(errors.map((e) => e.code)).toEqual(["closed"]);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(FakeSocket.all).toHaveLength(1);
  });

  it("reconnects after 4008 (slow consumer) and 4001 (idle)", async () => {
    const sb = client();
    const socket = await connected(sb);
    socket.serverClose(4008, "slow consumer");
    await vi.advanceTimersByTimeAsync(0);
    FakeSocket.last().welcome();
    FakeSocket.last().serverClose(4001, "idle");
    await vi.advanceTimersByTimeAsync(0);
    expect(FakeSocket.all).toHaveLength(3);
  });

  it("drops a socket that gets no welcome in time and tries again", async () => {
    const sb = client({ connectTimeoutMs: 1000 });
    sb.connect();
    await vi.advanceTimersByTimeAsync(1000);
    expect(FakeSocket.all[0]!.closedWith?.code).toBe(4000);
    // (A zero delay set inside a timer counts as 1 ms under fake timers.)
    await vi.advanceTimersByTimeAsync(1);
    expect(FakeSocket.all).toHaveLength(2);
  });

  it("drops the socket when the browser goes offline, waits, and reconnects at once when it is back", async () => {
    const network = new EventTarget();
    const sb = client({ networkEvents: network, random: () => 0.9 });
    const socket = await connected(sb);
    const delays: (number | null)[] = [];
    sb.on("disconnected", (d) => delays.push(d.reconnectInMs));
    network.dispatchEvent(new Event("offline"));
    expect(socket.closedWith?.code).toBe(4000);
    expect(sb.state).toBe("reconnecting");
    expect(delays).toEqual([null]);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(FakeSocket.all).toHaveLength(1); // no attempt while offline
    network.dispatchEvent(new Event("online"));
    await vi.advanceTimersByTimeAsync(0);
    expect(FakeSocket.all).toHaveLength(2); // at once, no backoff
    FakeSocket.last().welcome();
    expect(sb.state).toBe("connected");
    sb.close();
    network.dispatchEvent(new Event("online"));
    network.dispatchEvent(new Event("offline"));
    await vi.advanceTimersByTimeAsync(60_000);
    expect(FakeSocket.all).toHaveLength(2);
  });

  it("close() stops for good and rejects what waits", async () => {
    const sb = client();
    const socket = await connected(sb);
    const room = sb.room("r");
    void room.join();
    const sent = room.send("x");
    sb.close();
    await expect(sent).rejects.toMatchObject({ code: "closed" });
    expect(socket.closedWith?.code).toBe(1000);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(FakeSocket.all).toHaveLength(1);
    expect(sb.state).toBe("closed");
  });
});

describe("rooms: resume and dedupe", () => {
  it("rejoins after a reconnect with the last seq and epoch, and delivers each message once in order", async () => {
    const sb = client();
    let socket = await connected(sb);
    const room = sb.room("r");
    const got: number[] = [];
    room.on("message", (m: MessageFrame) => got.push(m.seq));
    const joined = room.join();
    socket.answerJoin({ epoch: 7, last_seq: 3, unread: 3 });
    await expect(joined).resolves.toMatchObject({ last_seq: 3 });
    expect(socket.of("join")[0]).not.toHaveProperty("since");
    socket.receive(message("r", 4));
    socket.receive(message("r", 5));
    socket.receive(message("r", 5)); // a duplicate
    socket.serverClose(1006);
    await vi.advanceTimersByTimeAsync(0);
    socket = FakeSocket.last();
    socket.welcome();
    const rejoin = socket.of("join")[0]!;
    expect(rejoin).toMatchObject({ room: "r", since: 5, epoch: 7 });
    socket.answerJoin({ epoch: 7, last_seq: 8, unread: 8 });
    for (const seq of [5, 6, 7, 8]) socket.receive(message("r", seq)); // 5 again: overlap with live
    socket.receive(message("r", 8));
    expect(got).toEqual([4, 5, 6, 7, 8]);
  });

  it("surfaces recovered: false, and takes the most recent messages whatever their seqs", async () => {
    const sb = client();
    let socket = await connected(sb);
    const room = sb.room("r");
    const events: string[] = [];
    room.on("joined", (j) => events.push(`joined recovered=${j.recovered}`));
    room.on("message", (m) => events.push(`m${m.seq}`));
    void room.join();
    socket.answerJoin({ last_seq: 10 });
    socket.receive(message("r", 11));
    socket.serverClose(1006);
    await vi.advanceTimersByTimeAsync(0);
    socket = FakeSocket.last();
    socket.welcome();
    // The history was reset meanwhile: another epoch, seqs from 1 again.
    socket.answerJoin({ epoch: 2, last_seq: 2, recovered: false, unread: 2 });
    socket.receive(message("r", 1));
    socket.receive(message("r", 2));
    expect(events).toEqual(["joined recovered=true", "m11", "joined recovered=false", "m1", "m2"]);
    expect(room.recovered).toBe(false);
    expect(room.epoch).toBe(2);
  });

  it("a reset starts the room over at seq 1 of the new epoch", async () => {
    const sb = client();
    const socket = await connected(sb);
    const room = sb.room("r");
    const got: string[] = [];
    room.on("message", (m) => got.push(`m${m.seq}`));
    room.on("reset", (e) => got.push(`reset ${e}`));
    void room.join();
    socket.answerJoin({ last_seq: 5 });
    socket.receive(message("r", 6));
    socket.receive({ type: "reset", room: "r", epoch: 2 });
    socket.receive(message("r", 1));
    expect(got).toEqual(["m6", "reset 2", "m1"]);
  });

  it("keeps presence as a set, replaced by each rejoin's list", async () => {
    const sb = client();
    let socket = await connected(sb);
    const room = sb.room("r", { presence: true });
    void room.join();
    expect(socket.of("join")[0]).toMatchObject({ presence: true });
    socket.answerJoin({ present: ["alice", "bob"] });
    socket.receive({ type: "presence", room: "r", joined: ["carol"], left: ["bob"] });
    expect([...room.presentUsers].sort()).toEqual(["alice", "carol"]);
    socket.serverClose(1006);
    await vi.advanceTimersByTimeAsync(0);
    socket = FakeSocket.last();
    socket.welcome();
    const changes: unknown[] = [];
    room.on("presence", (_, change) => changes.push(change));
    socket.answerJoin({ present: ["alice", "dave"] });
    expect(changes).toEqual([{ joined: ["dave"], left: ["carol"] }]);
  });

  it("a refused join rejects and is not retried", async () => {
    const sb = client();
    const socket = await connected(sb);
    const joined = sb.room("secret").join();
    socket.receive({ type: "error", ref: socket.of("join")[0]!.ref, code: "forbidden", message: "no" });
    await expect(joined).rejects.toMatchObject({ code: "forbidden" });
    socket.serverClose(1006);
    await vi.advanceTimersByTimeAsync(0);
    FakeSocket.last().welcome();
    expect(FakeSocket.last().of("join")).toHaveLength(0);
  });

  it("removed: the room's sends are rejected and it is not rejoined", async () => {
    const sb = client();
    const { socket, room } = await inRoom(sb);
    const sent = room.send("x");
    let removed = 0;
    room.on("removed", () => removed++);
    socket.receive({ type: "removed", room: "r" });
    await expect(sent).rejects.toMatchObject({ code: "removed" });
    expect(removed).toBe(1);
    await expect(room.join()).rejects.toMatchObject({ code: "removed" });
  });
});

describe("sending", () => {
  it("re-sends an unacknowledged send after a reconnect with the same client_id, after the rejoin", async () => {
    const sb = client();
    const { socket, room } = await inRoom(sb);
    const sent = room.send("hello");
    const first = socket.of("send")[0]!;
    socket.serverClose(1006); // dropped mid-send: no ack
    await vi.advanceTimersByTimeAsync(0);
    const again = FakeSocket.last();
    again.welcome();
    expect(again.sent.map((f) => f.type)).toEqual(["join", "send"]);
    const resent = again.of("send")[0]!;
    expect(resent.client_id).toBe(first.client_id);
    expect(resent.ref).not.toBe(first.ref);
    again.receive({ type: "ack", ref: resent.ref, status: "accepted", id: "m-1" });
    await expect(sent).resolves.toEqual({ id: "m-1", clientId: first.client_id });
  });

  it("queues sends made offline and sends them in call order once connected", async () => {
    const sb = client();
    const room = sb.room("r");
    void room.join();
    const sends = ["one", "two", "three"].map((b) => room.send(b));
    expect(sb.queuedSends).toBe(3);
    sb.connect();
    await vi.advanceTimersByTimeAsync(0);
    const socket = FakeSocket.last();
    socket.welcome();
    expect(socket.sent.map((f) => (f.type === "send" ? f.body : f.type))).toEqual(["join", "one", "two", "three"]);
    for (const f of socket.of("send")) socket.receive({ type: "ack", ref: f.ref, status: "accepted", id: `id-${f.body}` });
    await expect(Promise.all(sends)).resolves.toHaveLength(3);
    expect(sb.queuedSends).toBe(0);
  });

  it("bounds the queue: one send over maxQueuedSends is refused at once", async () => {
    const sb = client({ maxQueuedSends: 2 });
    const room = sb.room("r");
    void room.join();
    void room.send("a").catch(() => {});
    void room.send("b").catch(() => {});
    await expect(room.send("c")).rejects.toMatchObject({ code: "queue_full" });
  });

  it("times out a send with its clientId, so the app can send it again exactly once", async () => {
    const sb = client({ sendTimeoutMs: 5000 });
    const { socket, room } = await inRoom(sb);
    const sent = room.send("slow");
    const clientId = socket.of("send")[0]!.client_id;
    const expectation = expect(sent).rejects.toMatchObject({ code: "timeout", clientId });
    await vi.advanceTimersByTimeAsync(5000);
    await expectation;
    void room.send("slow", { clientId }).catch(() => {});
    expect(socket.of("send")[1]!.client_id).toBe(clientId);
  });

  it("retries unavailable with the same client_id, and rejects a client error at once", async () => {
    const sb = client();
    const { socket, room } = await inRoom(sb);
    const sent = room.send("x");
    const first = socket.of("send")[0]!;
    socket.receive({ type: "error", ref: first.ref, code: "unavailable", message: "kafka is down" });
    await vi.advanceTimersByTimeAsync(100);
    const retry = socket.of("send")[1]!;
    expect(retry.client_id).toBe(first.client_id);
    socket.receive({ type: "ack", ref: retry.ref, status: "accepted", id: "m" });
    await expect(sent).resolves.toMatchObject({ id: "m" });

    const bad = room.send("y");
    socket.receive({ type: "error", ref: socket.of("send")[2]!.ref, code: "not_joined", message: "no" });
    await expect(bad).rejects.toBeInstanceOf(SwitchboardError);
    await expect(bad).rejects.toMatchObject({ code: "not_joined" });
  });

  it("refuses what the server would refuse, without sending it", async () => {
    const sb = client();
    const { socket, room } = await inRoom(sb);
    await expect(room.send("")).rejects.toMatchObject({ code: "body_too_large" });
    await expect(room.send("é".repeat(LIMITS.max_body_bytes / 2 + 1))).rejects.toMatchObject({ code: "body_too_large" });
    // Within the body limit, but JSON escaping makes the frame too big.
    await expect(room.send("\u0001".repeat(4000))).rejects.toMatchObject({ code: "frame_too_big" });
    await expect(sb.room("elsewhere").send("x")).rejects.toMatchObject({ code: "not_joined" });
    expect(socket.of("send")).toHaveLength(0);
  });

  it("paces frames to the announced rate: a reconnect with a long queue is not rate limited", async () => {
    const sb = client({ maxQueuedSends: 100 });
    const room = sb.room("r");
    void room.join();
    for (let i = 0; i < 80; i++) void room.send(`m${i}`).catch(() => {});
    sb.connect();
    await vi.advanceTimersByTimeAsync(0);
    const socket = FakeSocket.last();
    socket.welcome();
    const burst = LIMITS.rate_burst - 2;
    expect(socket.sent).toHaveLength(burst);
    await vi.advanceTimersByTimeAsync(1000);
    const afterOneSecond = socket.sent.length - burst;
    expect(afterOneSecond).toBeGreaterThanOrEqual(17);
    expect(afterOneSecond).toBeLessThanOrEqual(LIMITS.rate_per_second);
    await vi.advanceTimersByTimeAsync(5000);
    expect(socket.of("send").map((f) => f.body)).toEqual(Array.from({ length: 80 }, (_, i) => `m${i}`));
  });
});

describe("reads and typing", () => {
  it("sends at most one read per room per second, the highest seq, and repeats it after a rejoin if the server lacks it", async () => {
    const sb = client();
    let { socket, room } = await inRoom(sb, { last_seq: 10, read_seq: 2, unread: 8 });
    room.markRead(3);
    room.markRead(5);
    room.markRead(4); // lower: ignored
    expect(socket.of("read").map((f) => f.seq)).toEqual([3]);
    await vi.advanceTimersByTimeAsync(1000);
    expect(socket.of("read").map((f) => f.seq)).toEqual([3, 5]);
    room.markRead(9);
    socket.serverClose(1006); // before the second is over: 9 is not sent yet
    await vi.advanceTimersByTimeAsync(1000);
    socket = FakeSocket.last();
    socket.welcome();
    socket.answerJoin({ last_seq: 10, read_seq: 5, unread: 5 });
    expect(socket.of("read").map((f) => f.seq)).toEqual([9]);
  });

  it("another connection's read of this user moves the room's read position", async () => {
    const sb = client();
    const { socket, room } = await inRoom(sb, { last_seq: 10, read_seq: 2, unread: 8 }, "alice");
    socket.receive({ type: "read", room: "r", user: "alice", seq: 10 });
    expect(room.readSeq).toBe(10);
    expect(room.unread).toBe(0);
  });

  it("typing is sent at most every 2 s and other users' typing is told", async () => {
    const sb = client();
    const { socket, room } = await inRoom(sb, {}, "alice");
    room.typing();
    room.typing();
    await vi.advanceTimersByTimeAsync(2000);
    room.typing();
    expect(socket.of("typing")).toHaveLength(2);
    const who: string[] = [];
    room.on("typing", (u) => who.push(u));
    socket.receive({ type: "typing", room: "r", user: "bob" });
    socket.receive({ type: "typing", room: "r", user: "alice" }); // own echo
    expect(who).toEqual(["bob"]);
  });
});

describe("listeners", () => {
  it("on() returns the function that removes the listener", async () => {
    const sb = client();
    const room = sb.room("r");
    let calls = 0;
    const off = room.on("message", () => calls++);
    expect(room.listenerCount("message")).toBe(1);
    off();
    off();
    expect(room.listenerCount("message")).toBe(0);
    expect(calls).toBe(0);
  });

  it("one room object per name", () => {
    const sb = client();
    expect(sb.room("r")).toBe(sb.room("r"));
  });
});
