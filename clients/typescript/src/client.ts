import { type BackoffOptions, backoffDelay } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { SwitchboardError, type SwitchboardErrorCode } from "./errors.js";
import type { ClientFrame, Limits, ServerFrame } from "./protocol.js";
import { type HistoryPage, Room, type RoomHost, type RoomOptions, type Sent } from "./room.js";

type Frame<T extends ServerFrame["type"]> = Extract<ServerFrame, { type: T }>;
export type Welcome = Frame<"welcome">;

/**
 * `idle` until `connect()`; `connecting` to the first welcome; `connected`
 * while a welcomed socket is open; `reconnecting` from a drop until the
 * next welcome (waiting out the backoff included); `closed` after
 * `close()` or a close code that retrying would repeat.
 */
export type ConnectionState = "idle" | "connecting" | "connected" | "reconnecting" | "closed";

/**
 * The part of the WebSocket API the client uses: the browser's, or `ws`'s in
 * Node. The handlers' events are `any` because each platform declares its
 * own event classes; the client reads `data` of a message event and
 * `code` and `reason` of a close event, which all of them have.
 */
/* biome-ignore-start lint: see above */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
}
/* biome-ignore-end lint */
/**
 * Called as `new WebSocket(url)`. Declared with loose parameters so that
 * `ws`'s class, whose first overload takes `null`, is accepted as it is.
 */
// biome-ignore lint: the parameters are deliberately loose (see above)
export type WebSocketConstructor = new (...args: any[]) => WebSocketLike;

export interface SwitchboardOptions {
  /** The edges' WebSocket URLs (`ws://host:port/ws`); each reconnect tries the next. */
  urls: string | readonly string[];
  /** A token, or a function returning one, called on every (re)connect so expiring tokens are refreshed. */
  token: string | (() => string | Promise<string>);
  /** The WebSocket constructor; defaults to the platform's (`globalThis.WebSocket`). Node 20: pass `ws`'s. */
  WebSocket?: WebSocketConstructor;
  /** Reconnect backoff (exponential, full jitter; 0.5 s doubling to 10 s), or `false` not to reconnect. */
  reconnect?: BackoffOptions | false;
  /** On 1012 (the edge is draining) reconnect to the next edge within a random delay up to this (ms, default 1,000). */
  drainingDelayMs?: number;
  /** A connection without `welcome` within this is dropped and retried (ms, default 10,000). */
  connectTimeoutMs?: number;
  /** A send not acknowledged within this after the call is rejected with `timeout` (ms, default 30,000). */
  sendTimeoutMs?: number;
  /** Unacknowledged sends held at most, online or offline; one more is rejected with `queue_full` (default 100). */
  maxQueuedSends?: number;
  /** `history` requests not answered within this are rejected with `timeout` (ms, default 15,000). */
  requestTimeoutMs?: number;
  /**
   * Where the browser says it went offline or online (`window` by default,
   * where there is one; `null`: ignore). On `offline` the client drops the
   * socket at once (it would otherwise hang until TCP gives up) and waits;
   * on `online` it reconnects at once, without backoff.
   */
  networkEvents?: NetworkEvents | null;
  /** The source of randomness for jitter (tests make it deterministic). */
  random?: () => number;
}

/** `window`, or anything that fires `online` and `offline` events. */
export interface NetworkEvents {
  addEventListener(type: "online" | "offline", listener: () => void): void;
  removeEventListener(type: "online" | "offline", listener: () => void): void;
}

export interface ClientEvents {
  state: (state: ConnectionState) => void;
  /** Every welcome: the first connection and each reconnect. */
  connected: (welcome: Welcome) => void;
  /**
   * The socket closed; `reconnectInMs` is `null` when no retry is scheduled:
   * the client is closed, or the browser is offline (it reconnects on `online`).
   */
  disconnected: (info: { code: number; reason: string; reconnectInMs: number | null }) => void;
  /** Errors that answer no call of the app: an unreadable frame's, a token provider's, a fatal close. */
  error: (error: SwitchboardError) => void;
}

interface PendingSend {
  room: Room;
  body: string;
  clientId: string;
  /** The ref of the frame on the current socket; none while it waits to be (re)sent. */
  ref?: string;
  tries: number;
  timer: ReturnType<typeof setTimeout>;
  retryTimer?: ReturnType<typeof setTimeout>;
  resolve: (sent: Sent) => void;
  reject: (error: SwitchboardError) => void;
}

type Request =
  | { kind: "join"; room: Room; tries: number }
  | { kind: "leave"; resolve: () => void }
  | { kind: "history"; resolve: (page: HistoryPage) => void; reject: (e: SwitchboardError) => void; timer: ReturnType<typeof setTimeout> };

/** Codes after which a send or join is retried (same `client_id`), as PROTOCOL.md says. */
const RETRYABLE = new Set(["unavailable", "internal", "rate_limited"]);
/** Close codes that a reconnect would only repeat: surfaced, not retried. */
const FATAL_CLOSE = new Set([1002, 1007, 1009]);
const DRAINING = 1012;
const TYPING_EVERY_MS = 2_000;
const READ_EVERY_MS = 1_000;

/**
 * One connection to Switchboard's edges for the whole app: it reconnects
 * with backoff, rejoins every room where it left off, and re-sends what
 * was not acknowledged with the same `client_id`.
 */
export class Switchboard extends Emitter<ClientEvents> implements RoomHost {
  private readonly urls: readonly string[];
  private readonly WS: WebSocketConstructor;
  private readonly random: () => number;
  private readonly opts: Required<
    Omit<SwitchboardOptions, "urls" | "token" | "WebSocket" | "reconnect" | "random" | "networkEvents">
  >;
  private readonly network: NetworkEvents | null;
  private offline = false;
  private readonly onOffline = () => this.wentOffline();
  private readonly onOnline = () => this.cameOnline();
  private current: ConnectionState = "idle";
  private socket: WebSocketLike | null = null;
  private welcome: Welcome | undefined;
  private welcomed = false;
  private closing = false;
  private generation = 0;
  private attempt = 0;
  private urlIndex: number;
  private refs = 0;
  private connectTimer?: ReturnType<typeof setTimeout>;
  private reconnectTimer?: ReturnType<typeof setTimeout>;
  private readonly rooms = new Map<string, Room>();
  private sends: PendingSend[] = [];
  private readonly sendsByRef = new Map<string, PendingSend>();
  private readonly requests = new Map<string, Request>();
  // Outgoing frames, paced to the connection's announced rate so that a
  // reconnect that rejoins many rooms and re-sends a queue is not answered
  // with rate_limited.
  private outbox: string[] = [];
  private tokens = 0;
  private refilledAt = 0;
  private pumpTimer?: ReturnType<typeof setTimeout>;
  private readonly typingAt = new Map<string, number>();
  private readonly reads = new Map<string, { sentAt: number; pending?: number; timer?: ReturnType<typeof setTimeout> }>();

  constructor(private readonly options: SwitchboardOptions) {
    super();
    this.urls = typeof options.urls === "string" ? [options.urls] : [...options.urls];
    if (this.urls.length === 0) throw new TypeError("Switchboard: `urls` names no edge");
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      throw new TypeError("Switchboard: this platform has no WebSocket; pass one as `WebSocket` (in Node 20: `ws`)");
    }
    this.WS = WS;
    this.random = options.random ?? Math.random;
    this.opts = {
      drainingDelayMs: options.drainingDelayMs ?? 1_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      sendTimeoutMs: options.sendTimeoutMs ?? 30_000,
      maxQueuedSends: options.maxQueuedSends ?? 100,
      requestTimeoutMs: options.requestTimeoutMs ?? 15_000,
    };
    // Spread clients over the edges from the start.
    this.urlIndex = Math.floor(this.random() * this.urls.length);
    const win = (globalThis as { window?: Partial<NetworkEvents> }).window;
    this.network =
      options.networkEvents !== undefined
        ? options.networkEvents
        : typeof win?.addEventListener === "function"
          ? (win as NetworkEvents)
          : null;
  }

  get state(): ConnectionState {
    return this.current;
  }

  /** The user id the server knows this connection by (after the first welcome). */
  get user(): string | undefined {
    return this.welcome?.user;
  }

  /** The server's limits, from the last welcome. */
  get limits(): Limits | undefined {
    return this.welcome?.limits;
  }

  /** The edge node of the current connection. */
  get node(): string | undefined {
    return this.welcomed ? this.welcome?.node : undefined;
  }

  /** Sends not acknowledged yet (queued offline, in flight, or waiting to retry). */
  get queuedSends(): number {
    return this.sends.length;
  }

  /** Opens the connection (again, after `close()`); does nothing while connecting or connected. */
  connect(): void {
    if (this.current === "connecting" || this.current === "connected" || this.current === "reconnecting") return;
    this.closing = false;
    this.attempt = 0;
    this.network?.addEventListener("offline", this.onOffline);
    this.network?.addEventListener("online", this.onOnline);
    this.offline = (globalThis as { navigator?: { onLine?: boolean } }).navigator?.onLine === false && this.network !== null;
    if (this.offline) this.setState("connecting");
    else void this.open();
  }

  /**
   * Closes the connection for good (until `connect()`): unacknowledged
   * sends are rejected with `closed`; rooms stay joined for a later `connect()`.
   */
  close(): void {
    this.closing = true;
    clearTimeout(this.reconnectTimer);
    this.network?.removeEventListener("offline", this.onOffline);
    this.network?.removeEventListener("online", this.onOnline);
    const socket = this.socket;
    if (socket) this.dropSocket(socket, 1000, "closed by the client");
    this.failSends(null, "closed", "the client was closed");
    this.setState("closed");
  }

  /** The room `name`: one object per name, whose listeners and position outlive reconnects. */
  room(name: string, options: RoomOptions = {}): Room {
    let room = this.rooms.get(name);
    if (!room) {
      room = new Room(name, options, this);
      this.rooms.set(name, room);
    }
    return room;
  }

  // -- RoomHost ---------------------------------------------------------------

  /** @internal */
  wantJoin(room: Room): void {
    if (this.welcomed) this.transmitJoin(room, 0);
  }

  /** @internal */
  wantLeave(room: Room): Promise<void> {
    this.failSends(room, "not_joined", `left ${room.name}`);
    if (!this.welcomed) return Promise.resolve();
    return new Promise((resolve) => {
      const ref = this.nextRef("l");
      this.requests.set(ref, { kind: "leave", resolve });
      this.transmit({ type: "leave", ref, room: room.name });
    });
  }

  /** @internal */
  send(room: Room, body: string, clientId: string | undefined): Promise<Sent> {
    if (this.closing) return Promise.reject(new SwitchboardError("closed", "the client was closed", clientId));
    const bytes = utf8Length(body);
    const max = this.welcome?.limits.max_body_bytes;
    if (bytes === 0 || (max !== undefined && bytes > max)) {
      return Promise.reject(
        new SwitchboardError("body_too_large", `a body is 1 to ${max ?? "max_body_bytes"} bytes; this one is ${bytes}`, clientId),
      );
    }
    if (this.sends.length >= this.opts.maxQueuedSends) {
      return Promise.reject(
        new SwitchboardError("queue_full", `${this.sends.length} sends are not acknowledged yet (maxQueuedSends)`, clientId),
      );
    }
    const id = clientId ?? randomId();
    return new Promise<Sent>((resolve, reject) => {
      const pending: PendingSend = {
        room,
        body,
        clientId: id,
        tries: 0,
        resolve,
        reject,
        timer: setTimeout(
          () =>
            this.finishSend(
              pending,
              new SwitchboardError("timeout", `no ack within ${this.opts.sendTimeoutMs} ms; it may be stored: send again with the same clientId`, id),
            ),
          this.opts.sendTimeoutMs,
        ),
      };
      this.sends.push(pending);
      if (this.welcomed) this.transmitSend(pending);
    });
  }

  /** @internal */
  typing(room: Room): void {
    const now = Date.now();
    if (!this.welcomed || now - (this.typingAt.get(room.name) ?? -Infinity) < TYPING_EVERY_MS) return;
    this.typingAt.set(room.name, now);
    this.transmit({ type: "typing", ref: this.nextRef("t"), room: room.name });
  }

  /** @internal At most one `read` per room per second: the highest seq of that second. */
  read(room: Room, seq: number): void {
    let state = this.reads.get(room.name);
    if (!state) {
      state = { sentAt: -Infinity };
      this.reads.set(room.name, state);
    }
    state.pending = Math.max(state.pending ?? 0, seq);
    if (state.timer) return;
    const wait = state.sentAt + READ_EVERY_MS - Date.now();
    const s = state;
    const flush = () => {
      s.timer = undefined;
      if (s.pending === undefined || !this.welcomed || !room.wanted) return; // sent again on rejoin (see onJoined)
      this.transmit({ type: "read", ref: this.nextRef("r"), room: room.name, seq: s.pending });
      s.pending = undefined;
      s.sentAt = Date.now();
    };
    if (wait <= 0) flush();
    else state.timer = setTimeout(flush, wait);
  }

  /** @internal */
  history(room: Room, beforeSeq: number | undefined, limit: number | undefined): Promise<HistoryPage> {
    if (!this.welcomed) return Promise.reject(new SwitchboardError("disconnected", "not connected"));
    return new Promise((resolve, reject) => {
      const ref = this.nextRef("h");
      const timer = setTimeout(() => {
        if (this.requests.delete(ref)) reject(new SwitchboardError("timeout", `no history page within ${this.opts.requestTimeoutMs} ms`));
      }, this.opts.requestTimeoutMs);
      this.requests.set(ref, { kind: "history", resolve, reject, timer });
      const frame: ClientFrame = { type: "history", ref, room: room.name };
      if (beforeSeq !== undefined) frame.before_seq = beforeSeq;
      if (limit !== undefined) frame.limit = limit;
      this.transmit(frame);
    });
  }

  // -- the connection ---------------------------------------------------------

  /** The state while no socket is welcomed: before the first welcome, or after one. */
  private waiting(): ConnectionState {
    return this.welcome ? "reconnecting" : "connecting";
  }

  private setState(state: ConnectionState): void {
    if (this.current === state) return;
    this.current = state;
    this.emit("state", state);
  }

  private async open(): Promise<void> {
    clearTimeout(this.reconnectTimer);
    this.setState(this.waiting());
    const generation = ++this.generation;
    let token: string;
    try {
      token = typeof this.options.token === "function" ? await this.options.token() : this.options.token;
    } catch (e) {
      if (generation !== this.generation || this.closing) return;
      this.emit("error", new SwitchboardError("token_failed", `the token provider failed: ${String(e)}`));
      this.retryLater(0, "token provider failed");
      return;
    }
    if (generation !== this.generation || this.closing) return;
    const base = this.urls[this.urlIndex % this.urls.length] as string;
    const url = `${base}${base.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
    let socket: WebSocketLike;
    try {
      socket = new this.WS(url);
    } catch (e) {
      this.emit("error", new SwitchboardError("disconnected", `cannot open ${base}: ${String(e)}`));
      this.retryLater(1006, String(e));
      return;
    }
    this.socket = socket;
    socket.onmessage = (event: { data: unknown }) => this.onData(socket, event.data);
    socket.onclose = (event: { code: number; reason: string }) => this.onClosed(socket, event.code, event.reason);
    socket.onerror = () => {}; // a close event follows with the code
    this.connectTimer = setTimeout(() => {
      if (this.socket === socket && !this.welcomed) {
        this.dropSocket(socket, 4000, "no welcome in time");
        this.afterClose(4000, `no welcome within ${this.opts.connectTimeoutMs} ms`);
      }
    }, this.opts.connectTimeoutMs);
  }

  /** Detaches and closes a socket the client gives up on. */
  private dropSocket(socket: WebSocketLike, code: number, reason: string): void {
    socket.onmessage = null;
    socket.onclose = null;
    socket.onerror = null;
    try {
      socket.close(code, reason);
    } catch {
      // Already closing, or a code the platform refuses: the socket is gone either way.
    }
    if (this.socket === socket) this.forgetSocket();
  }

  private forgetSocket(): void {
    this.socket = null;
    this.welcomed = false;
    clearTimeout(this.connectTimer);
    clearTimeout(this.pumpTimer);
    this.pumpTimer = undefined;
    this.outbox = [];
    for (const [ref, request] of this.requests) {
      if (request.kind === "leave") request.resolve();
      if (request.kind === "history") {
        clearTimeout(request.timer);
        request.reject(new SwitchboardError("disconnected", "the connection dropped before the page came"));
      }
      // A join stays wanted: the next welcome sends it again.
      this.requests.delete(ref);
    }
    for (const s of this.sends) s.ref = undefined;
    this.sendsByRef.clear();
  }

  private onClosed(socket: WebSocketLike, code: number, reason: string): void {
    if (this.socket !== socket) return;
    this.forgetSocket();
    this.afterClose(code, reason);
  }

  /** What follows the loss of the current socket: stop for good, or retry. */
  private afterClose(code: number, reason: string): void {
    if (this.closing) return;
    if (FATAL_CLOSE.has(code)) {
      const error = new SwitchboardError("closed", `the server closed the connection with ${code} (${reason || "no reason"}): reconnecting would repeat it`);
      this.failSends(null, "closed", error.message);
      this.setState("closed");
      this.emit("disconnected", { code, reason, reconnectInMs: null });
      this.emit("error", error);
      return;
    }
    this.retryLater(code, reason);
  }

  private wentOffline(): void {
    if (this.closing || this.offline) return;
    this.offline = true;
    clearTimeout(this.reconnectTimer);
    this.generation += 1; // a connect waiting for its token gives up
    const socket = this.socket;
    if (socket) this.dropSocket(socket, 4000, "offline");
    this.setState(this.waiting());
    this.emit("disconnected", { code: 4000, reason: "the browser is offline", reconnectInMs: null });
  }

  private cameOnline(): void {
    if (this.closing || !this.offline) return;
    this.offline = false;
    this.attempt = 0;
    if (!this.socket) void this.open();
  }

  private retryLater(code: number, reason: string): void {
    let delay: number;
    if (this.offline) return; // `online` reconnects
    if (this.options.reconnect === false) {
      this.setState("closed");
      this.emit("disconnected", { code, reason, reconnectInMs: null });
      return;
    }
    if (code === DRAINING) {
      // Another edge answers at once; the random delay spreads the drained crowd.
      delay = Math.floor(this.random() * this.opts.drainingDelayMs);
    } else {
      delay = backoffDelay(this.attempt++, this.options.reconnect, this.random);
    }
    this.urlIndex += 1;
    this.setState(this.waiting());
    this.emit("disconnected", { code, reason, reconnectInMs: delay });
    this.reconnectTimer = setTimeout(() => void this.open(), delay);
  }

  private onData(socket: WebSocketLike, data: unknown): void {
    if (socket !== this.socket || typeof data !== "string") return;
    let frame: ServerFrame;
    try {
      frame = JSON.parse(data) as ServerFrame;
    } catch {
      this.emit("error", new SwitchboardError("bad_json", "the server sent a frame that is not JSON"));
      return;
    }
    switch (frame.type) {
      case "welcome":
        return this.onWelcome(frame);
      case "joined": {
        const request = this.requests.get(frame.ref);
        this.requests.delete(frame.ref);
        const room = request?.kind === "join" ? request.room : undefined;
        if (!room) return;
        const mine = room.readSeq;
        room.onJoined(frame);
        // A read recorded while offline, or not yet sent: tell the server now.
        if (mine > frame.read_seq && room.wanted) this.read(room, mine);
        return;
      }
      case "left": {
        const request = this.requests.get(frame.ref);
        this.requests.delete(frame.ref);
        if (request?.kind === "leave") request.resolve();
        return;
      }
      case "message":
        return this.wanted(frame.room)?.onMessage(frame);
      case "ack": {
        const pending = this.sendsByRef.get(frame.ref);
        if (pending) this.finishSend(pending, undefined, { id: frame.id, clientId: pending.clientId });
        return;
      }
      case "error":
        return this.onError(frame);
      case "typing":
        if (frame.user !== this.user) this.wanted(frame.room)?.onTyping(frame.user);
        return;
      case "presence":
        return this.wanted(frame.room)?.onPresence(frame.joined, frame.left);
      case "read":
        return this.wanted(frame.room)?.onRead(frame.user, frame.seq);
      case "reset":
        return this.wanted(frame.room)?.onReset(frame.epoch);
      case "removed": {
        const room = this.rooms.get(frame.room);
        if (!room) return;
        this.failSends(room, "removed", `removed from ${room.name}`);
        room.onRemoved();
        return;
      }
      case "history": {
        const request = this.requests.get(frame.ref);
        this.requests.delete(frame.ref);
        if (request?.kind !== "history") return;
        clearTimeout(request.timer);
        request.resolve({ epoch: frame.epoch, messages: frame.messages, hasMore: frame.has_more });
        return;
      }
      case "pong":
        return;
    }
  }

  private wanted(name: string): Room | undefined {
    const room = this.rooms.get(name);
    return room?.wanted ? room : undefined;
  }

  private onWelcome(frame: Welcome): void {
    clearTimeout(this.connectTimer);
    this.welcome = frame;
    this.welcomed = true;
    this.attempt = 0;
    this.tokens = this.burst();
    this.refilledAt = Date.now();
    this.setState("connected");
    this.emit("connected", frame);
    // Joins first, then the sends that wait, in the order they were made:
    // the server handles one connection's frames in order.
    for (const room of this.rooms.values()) if (room.wanted) this.transmitJoin(room, 0);
    for (const s of this.sends) if (!s.ref && !s.retryTimer) this.transmitSend(s);
  }

  private onError(frame: Frame<"error">): void {
    const error = new SwitchboardError(frame.code, frame.message);
    const ref = frame.ref ?? undefined;
    const pending = ref !== undefined ? this.sendsByRef.get(ref) : undefined;
    if (pending) {
      this.sendsByRef.delete(pending.ref as string);
      pending.ref = undefined;
      if (RETRYABLE.has(frame.code)) {
        // Same client_id again after a pause: stored once whatever happened to the first try.
        pending.retryTimer = setTimeout(() => {
          pending.retryTimer = undefined;
          if (this.welcomed && this.sends.includes(pending)) this.transmitSend(pending);
        }, this.retryDelay(pending.tries++));
        return;
      }
      this.finishSend(pending, new SwitchboardError(frame.code, frame.message, pending.clientId));
      return;
    }
    const request = ref !== undefined ? this.requests.get(ref) : undefined;
    if (request && ref !== undefined) {
      this.requests.delete(ref);
      if (request.kind === "join") {
        const { room, tries } = request;
        if (RETRYABLE.has(frame.code)) {
          setTimeout(() => {
            if (this.welcomed && room.wanted) this.transmitJoin(room, tries + 1);
          }, this.retryDelay(tries));
        } else if (frame.code !== "already_joined") {
          room.onJoinRefused(error);
        }
      } else if (request.kind === "history") {
        clearTimeout(request.timer);
        request.reject(error);
      } else {
        request.resolve();
      }
      return;
    }
    // No request of ours: e.g. a send refused by the persister after its ack.
    this.emit("error", error);
  }

  private transmitJoin(room: Room, tries: number): void {
    const ref = this.nextRef("j");
    this.requests.set(ref, { kind: "join", room, tries });
    const frame: ClientFrame = { type: "join", ref, room: room.name, ...room.resumeFrom() };
    if (room.options.presence) frame.presence = true;
    this.transmit(frame);
  }

  private transmitSend(pending: PendingSend): void {
    const ref = this.nextRef("s");
    const frame: ClientFrame = { type: "send", ref, room: pending.room.name, client_id: pending.clientId, body: pending.body };
    const text = JSON.stringify(frame);
    const max = this.welcome?.limits.max_frame_bytes;
    if (max !== undefined && utf8Length(text) > max) {
      this.finishSend(pending, new SwitchboardError("frame_too_big", `the send frame would be over ${max} bytes`, pending.clientId));
      return;
    }
    pending.ref = ref;
    this.sendsByRef.set(ref, pending);
    this.outbox.push(text);
    this.pump();
  }

  /** Rejects every waiting send (of `room`, or all with `null`) with `code`. */
  private failSends(room: Room | null, code: SwitchboardErrorCode, message: string): void {
    for (const s of this.sends.filter((s) => room === null || s.room === room)) {
      this.finishSend(s, new SwitchboardError(code, message, s.clientId));
    }
  }

  private finishSend(pending: PendingSend, error: SwitchboardError | undefined, sent?: Sent): void {
    const i = this.sends.indexOf(pending);
    if (i < 0) return;
    this.sends.splice(i, 1);
    clearTimeout(pending.timer);
    clearTimeout(pending.retryTimer);
    if (pending.ref) this.sendsByRef.delete(pending.ref);
    if (error) pending.reject(error);
    else pending.resolve(sent as Sent);
  }

  private transmit(frame: ClientFrame): void {
    this.outbox.push(JSON.stringify(frame));
    this.pump();
  }

  // -- pacing -------------------------------------------------------------------

  /** A margin under the server's limits: its bucket and ours do not tick together. */
  private rate(): number {
    return Math.max(1, (this.welcome?.limits.rate_per_second ?? 20) * 0.9);
  }

  private burst(): number {
    return Math.max(1, (this.welcome?.limits.rate_burst ?? 40) - 2);
  }

  /** The pause before retry number `tries` of a refused send or join: backoff, and never under one frame's slot. */
  private retryDelay(tries: number): number {
    return Math.max(backoffDelay(tries, this.options.reconnect || {}, this.random), Math.ceil(1000 / this.rate()));
  }

  private pump(): void {
    const socket = this.socket;
    if (!socket || !this.welcomed || this.pumpTimer) return;
    const now = Date.now();
    this.tokens = Math.min(this.burst(), this.tokens + ((now - this.refilledAt) / 1000) * this.rate());
    this.refilledAt = now;
    while (this.outbox.length > 0 && this.tokens >= 1) {
      this.tokens -= 1;
      socket.send(this.outbox.shift() as string);
    }
    if (this.outbox.length > 0) {
      this.pumpTimer = setTimeout(() => {
        this.pumpTimer = undefined;
        this.pump();
      }, Math.ceil(((1 - this.tokens) / this.rate()) * 1000));
    }
  }

  private nextRef(prefix: string): string {
    this.refs += 1;
    return `${prefix}${this.refs}`;
  }
}

const encoder = new TextEncoder();

function utf8Length(text: string): number {
  return encoder.encode(text).length;
}

/** 16 random bytes as hex: crypto.getRandomValues works in Node 20 and in every browser context (randomUUID needs a secure one). */
function randomId(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
