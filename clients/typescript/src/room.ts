import { Emitter } from "./emitter.js";
import { SwitchboardError } from "./errors.js";
import type { MessageFrame, ServerFrame } from "./protocol.js";

type Frame<T extends ServerFrame["type"]> = Extract<ServerFrame, { type: T }>;
export type Joined = Frame<"joined">;

export interface RoomOptions {
  /** Ask who is in the room (`presence: true` on join). Off by default: big rooms make it costly. */
  presence?: boolean;
  /**
   * Resume from a position the app kept (e.g. in storage): the first join
   * then asks for what came after `since` in `epoch`.
   */
  since?: number;
  epoch?: number;
}

export interface SendOptions {
  /**
   * The idempotency key. Generated when absent; pass the one from a
   * `timeout` error's `clientId` to send again and have it stored once.
   */
  clientId?: string;
}

export interface Sent {
  /** The message's final id (the same every time this `clientId` is sent). */
  id: string;
  clientId: string;
}

export interface HistoryPage {
  epoch: number;
  /** Newest first. */
  messages: MessageFrame[];
  hasMore: boolean;
}

export interface RoomEvents {
  /** Each message once, in seq order, across reconnects. */
  message: (message: MessageFrame) => void;
  /**
   * Every `joined`, the first and each rejoin after a reconnect. With
   * `recovered: false` what the app holds of the room is stale: drop it;
   * the messages that follow (the most recent ones) start it again.
   */
  joined: (joined: Joined) => void;
  /** Who is in the room now (joined with `presence: true`), after each change. */
  presence: (present: ReadonlySet<string>, change: { joined: string[]; left: string[] }) => void;
  typing: (user: string) => void;
  /** A member's read position moved (`user` may be this user, from another connection). */
  read: (user: string, seq: number) => void;
  /** An operator reset the room's history: drop what you hold; the next message is seq 1 of `epoch`. */
  reset: (epoch: number) => void;
  /** The user was removed from this private room; the room is left for good. */
  removed: () => void;
}

/** What a room needs from its client (implemented by `Switchboard`). */
export interface RoomHost {
  readonly user: string | undefined;
  wantJoin(room: Room): void;
  wantLeave(room: Room): Promise<void>;
  send(room: Room, body: string, clientId: string | undefined): Promise<Sent>;
  typing(room: Room): void;
  read(room: Room, seq: number): void;
  history(room: Room, beforeSeq: number | undefined, limit: number | undefined): Promise<HistoryPage>;
}

type JoinState = "out" | "joining" | "in" | "removed";

/**
 * One room as this client sees it: its position (epoch and last seq, which
 * rejoins resume from), who is there, and the app's listeners. Get it with
 * `client.room(name)`; there is one object per room name and client.
 */
export class Room extends Emitter<RoomEvents> {
  /** The room's epoch as last seen (`undefined` before the first `joined`). */
  epoch: number | undefined;
  /** The last seq delivered to the app; messages at or below it are duplicates. */
  lastSeq: number | undefined;
  /** Whether the last (re)join kept the app's copy of the room. */
  recovered = true;
  /** This user's read position (from `joined`, own `read`s and other connections'). */
  readSeq = 0;
  /** Messages after `readSeq` when last joined, less those delivered since. */
  unread = 0;
  /** The last `joined` (while in the room). */
  lastJoined: Joined | undefined;
  private present = new Set<string>();
  private state: JoinState = "out";
  private joinWaiters: { resolve: (j: Joined) => void; reject: (e: SwitchboardError) => void }[] = [];

  /** @internal */
  constructor(
    readonly name: string,
    readonly options: RoomOptions,
    private readonly host: RoomHost,
  ) {
    super();
    this.epoch = options.since !== undefined ? options.epoch : undefined;
    this.lastSeq = options.since;
  }

  /** Whether the app wants the room joined (joining, or in it). */
  get wanted(): boolean {
    return this.state === "joining" || this.state === "in";
  }

  /** Who is in the room (with `presence: true`; empty otherwise). */
  get presentUsers(): ReadonlySet<string> {
    return this.present;
  }

  /**
   * Joins the room and keeps it joined: after every reconnect the client
   * rejoins with the last seen `since` and `epoch`, and what was missed is
   * delivered as `message` events. Resolves with the first `joined`.
   */
  join(): Promise<Joined> {
    if (this.state === "removed") {
      return Promise.reject(new SwitchboardError("removed", `removed from ${this.name}`));
    }
    if (this.state === "in" && this.lastJoined) return Promise.resolve(this.lastJoined);
    const promise = new Promise<Joined>((resolve, reject) => this.joinWaiters.push({ resolve, reject }));
    if (this.state === "out") {
      this.state = "joining";
      this.host.wantJoin(this);
    }
    return promise;
  }

  /** Leaves the room; no rejoin after reconnects. */
  leave(): Promise<void> {
    if (!this.wanted) return Promise.resolve();
    this.state = "out";
    this.lastJoined = undefined;
    this.failJoin(new SwitchboardError("not_joined", `left ${this.name} before it was joined`));
    this.present = new Set();
    return this.host.wantLeave(this);
  }

  /**
   * Sends a message. Resolves with its id once Kafka holds it; re-sent with
   * the same `clientId` after a reconnect until acknowledged, so it is
   * stored exactly once. Rejects with a `SwitchboardError`.
   */
  send(body: string, options: SendOptions = {}): Promise<Sent> {
    if (!this.wanted) {
      return Promise.reject(new SwitchboardError("not_joined", `join ${this.name} before sending to it`));
    }
    return this.host.send(this, body, options.clientId);
  }

  /** Tells the others this user is typing (at most once per 2 s is sent; call it on each keystroke). */
  typing(): void {
    if (this.state === "in") this.host.typing(this);
  }

  /**
   * Records that the user has read up to `seq` (monotonic; sent at most
   * once per second per room, the highest seq of that second).
   */
  markRead(seq: number): void {
    if (seq <= this.readSeq || !this.wanted) return;
    this.moveRead(seq);
    this.host.read(this, seq);
  }

  /** A page of stored messages, newest first, before `beforeSeq` (or the newest). Needs no join. */
  history(options: { beforeSeq?: number; limit?: number } = {}): Promise<HistoryPage> {
    return this.host.history(this, options.beforeSeq, options.limit);
  }

  // -- called by the client ---------------------------------------------------

  /** @internal The join frame's `since`/`epoch`: where to resume. */
  resumeFrom(): { since?: number; epoch?: number } {
    return this.lastSeq !== undefined && this.epoch !== undefined ? { since: this.lastSeq, epoch: this.epoch } : {};
  }

  /** @internal */
  onJoined(frame: Joined): void {
    if (this.state !== "joining" && this.state !== "in") return;
    this.state = "in";
    this.recovered = frame.recovered;
    const resumed = this.resumeFrom().since !== undefined;
    if (!resumed) {
      // A first join: live messages start after last_seq.
      this.lastSeq = frame.last_seq;
    } else if (!frame.recovered) {
      // The copy is stale: the most recent messages follow, whatever their seqs.
      this.lastSeq = 0;
    }
    this.epoch = frame.epoch;
    this.lastJoined = frame;
    this.readSeq = Math.max(this.readSeq, frame.read_seq);
    this.unread = frame.unread;
    this.emit("joined", frame);
    if (frame.present) {
      // After a rejoin the list replaces what the client held: tell the difference.
      const now = new Set(frame.present);
      const joined = frame.present.filter((u) => !this.present.has(u));
      const left = [...this.present].filter((u) => !now.has(u));
      this.present = now;
      this.emit("presence", this.present, { joined, left });
    }
    const waiters = this.joinWaiters;
    this.joinWaiters = [];
    for (const w of waiters) w.resolve(frame);
  }

  /** @internal A join refused (forbidden, invalid_room, too_many_rooms): the room is not wanted any more. */
  onJoinRefused(error: SwitchboardError): void {
    this.state = "out";
    this.lastJoined = undefined;
    this.failJoin(error);
  }

  /** @internal Delivers `message` unless it is a duplicate (by seq). */
  onMessage(message: MessageFrame): void {
    if (this.lastSeq !== undefined && message.seq <= this.lastSeq) return;
    this.lastSeq = message.seq;
    if (message.sender !== this.host.user) this.unread += 1;
    this.emit("message", message);
  }

  /** @internal */
  onPresence(joined: string[], left: string[]): void {
    for (const u of joined) this.present.add(u);
    for (const u of left) this.present.delete(u);
    this.emit("presence", this.present, { joined, left });
  }

  /** @internal */
  onTyping(user: string): void {
    this.emit("typing", user);
  }

  /** @internal */
  onRead(user: string, seq: number): void {
    if (user === this.host.user && seq > this.readSeq) this.moveRead(seq);
    this.emit("read", user, seq);
  }

  /** @internal */
  onReset(epoch: number): void {
    this.epoch = epoch;
    this.lastSeq = 0;
    this.readSeq = 0;
    this.unread = 0;
    this.emit("reset", epoch);
  }

  /** @internal */
  onRemoved(): void {
    this.state = "removed";
    this.lastJoined = undefined;
    this.present = new Set();
    this.failJoin(new SwitchboardError("removed", `removed from ${this.name}`));
    this.emit("removed");
  }

  private moveRead(seq: number): void {
    this.readSeq = seq;
    this.unread = Math.max(0, (this.lastSeq ?? 0) - seq);
  }

  private failJoin(error: SwitchboardError): void {
    const waiters = this.joinWaiters;
    this.joinWaiters = [];
    for (const w of waiters) w.reject(error);
  }
}
