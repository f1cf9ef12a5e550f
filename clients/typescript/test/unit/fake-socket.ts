// A stand-in for the platform WebSocket in unit tests: it records what the
// client sends and lets a test play the server's part frame by frame. The
// integration tests (test/integration) use the real server instead.
import type { ClientFrame, ServerFrame } from "../../src/protocol.js";
import type { WebSocketLike } from "../../src/client.js";
import type { Joined } from "../../src/room.js";

export const LIMITS = { max_frame_bytes: 16384, max_body_bytes: 4096, rate_per_second: 20, rate_burst: 40, max_replay: 500 };

export class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = [];
  sent: ClientFrame[] = [];
  closedWith?: { code?: number; reason?: string };
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;

  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }

  static reset(): void {
    FakeSocket.all = [];
  }

  static last(): FakeSocket {
    const socket = FakeSocket.all.at(-1);
    if (!socket) throw new Error("no socket was opened");
    return socket;
  }

  send(data: string): void {
    this.sent.push(JSON.parse(data) as ClientFrame);
  }

  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
  }

  /** The server speaks. */
  receive(frame: ServerFrame): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  /** Answers this socket's join of `room` ("r" unless given) with `joined`; defaults: a new, empty room. */
  answerJoin(fields: Partial<Joined> = {}): void {
    const room = fields.room ?? "r";
    const join = this.of("join").find((f) => f.room === room);
    if (!join) throw new Error(`no join of ${room} on this socket: ${JSON.stringify(this.sent)}`);
    this.receive({ type: "joined", ref: join.ref, room, epoch: 1, last_seq: 0, recovered: true, read_seq: 0, unread: 0, ...fields });
  }

  welcome(user = "alice", node = "edge-1"): void {
    this.receive({ type: "welcome", node, user, protocol: 1, limits: LIMITS });
  }

  /** The server (or the network) closes the connection. */
  serverClose(code: number, reason = ""): void {
    this.onclose?.({ code, reason });
  }

  of<T extends ClientFrame["type"]>(type: T): Extract<ClientFrame, { type: T }>[] {
    return this.sent.filter((f): f is Extract<ClientFrame, { type: T }> => f.type === type);
  }
}

export function message(room: string, seq: number, extra: Partial<{ sender: string; client_id: string; id: string }> = {}): ServerFrame {
  return {
    type: "message",
    room,
    seq,
    id: extra.id ?? `m${seq}`,
    client_id: extra.client_id ?? `c${seq}`,
    sender: extra.sender ?? "bob",
    sender_name: "Bob",
    body: `#${seq}`,
    sent_at: 1_700_000_000_000 + seq,
  };
}
