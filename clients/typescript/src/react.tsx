/**
 * React bindings: one connection for the app (`<SwitchboardProvider>`) and
 * hooks whose listeners are added once per mount and removed on unmount,
 * so an event fires a handler once however often the component renders,
 * and React's StrictMode (which mounts every effect twice) opens one
 * connection and joins each room once.
 */
import {
  createContext,
  type ReactNode,
  useCallback,
  useContext,
  useEffect,
  useRef,
  useState,
  useSyncExternalStore,
} from "react";
import { type ConnectionState, Switchboard, type SwitchboardOptions } from "./client.js";
import { SwitchboardError } from "./errors.js";
import type { MessageFrame } from "./protocol.js";
import type { Room, Sent } from "./room.js";

const Context = createContext<Switchboard | null>(null);

export type SwitchboardProviderProps = { children?: ReactNode } & (
  | { /** A client the app made (and closes); the provider only connects it. */ client: Switchboard }
  | (SwitchboardOptions & { client?: undefined })
);

/**
 * Reference counts whose last release acts on the next tick, unless a hold
 * comes first: StrictMode unmounts and remounts every effect at once, and
 * that must neither close the connection nor leave and rejoin a room.
 */
class Holds<K> {
  private readonly held = new Map<K, { count: number; release?: ReturnType<typeof setTimeout> }>();

  hold(key: K): void {
    const entry = this.held.get(key) ?? { count: 0 };
    clearTimeout(entry.release);
    entry.release = undefined;
    entry.count += 1;
    this.held.set(key, entry);
  }

  release(key: K, action: () => void): void {
    const entry = this.held.get(key);
    if (!entry) return;
    entry.count -= 1;
    if (entry.count > 0) return;
    entry.release = setTimeout(() => {
      this.held.delete(key);
      action();
    }, 0);
  }
}

/** Providers holding a client (the last one's unmount closes a client it made). */
const clientHolds = new Holds<Switchboard>();
/** Components in a room (the last one's unmount leaves it). */
const roomHolds = new Holds<Room>();

/**
 * Holds one connection for the components below it. Given options, it
 * makes the client, connects on mount and closes on unmount; given a
 * `client`, it connects it and leaves closing to the app.
 */
export function SwitchboardProvider(props: SwitchboardProviderProps): ReactNode {
  // The latest token provider, so an inline `token={() => ...}` prop is
  // always the one called on a reconnect, without making a new client.
  const latest = useRef(props);
  latest.current = props;
  // Making a client has no side effect (it connects in the effect below),
  // so StrictMode's second render making and dropping one is harmless.
  const [client] = useState(() => {
    if (props.client) return props.client;
    const { children: _children, client: _client, ...options } = props;
    return new Switchboard({
      ...options,
      token: () => {
        const current = latest.current;
        const token = "token" in current ? current.token : options.token;
        return typeof token === "function" ? token() : token;
      },
    });
  });
  const owned = !props.client;
  useEffect(() => {
    clientHolds.hold(client);
    client.connect();
    return () => clientHolds.release(client, () => owned && client.close());
  }, [client, owned]);
  return <Context.Provider value={client}>{props.children}</Context.Provider>;
}

/** The provider's client. */
export function useSwitchboard(): Switchboard {
  const client = useContext(Context);
  if (!client) throw new Error("useSwitchboard and useRoom need a <SwitchboardProvider> above them");
  return client;
}

/** `idle`, `connecting`, `connected`, `reconnecting` or `closed`; re-renders on each change. */
export function useConnectionState(): ConnectionState {
  const client = useSwitchboard();
  const subscribe = useCallback((onChange: () => void) => client.on("state", onChange), [client]);
  return useSyncExternalStore(subscribe, () => client.state, () => client.state);
}

export interface UseRoomOptions {
  /** Track who is in the room (`presence` in the result). */
  presence?: boolean;
  /** Messages loaded on join and per `loadOlder()` (default 50, at most 100). */
  pageSize?: number;
  /** How long a `typing` signal shows a user as typing (ms, default 5,000). */
  typingTimeoutMs?: number;
}

export interface RoomView {
  /** The room's messages in seq order: the latest page on join, older ones after `loadOlder()`, then live ones. */
  messages: MessageFrame[];
  /** Sends a message; resolves with its id once stored in Kafka. */
  send: (body: string) => Promise<Sent>;
  /** Users typing now (other than this one). */
  typing: string[];
  /** Call on each keystroke: tells the room this user is typing (throttled). */
  sendTyping: () => void;
  /** Users in the room (with `presence: true`), sorted. */
  presence: string[];
  /** Members' read positions (user → seq), as told since the join. */
  reads: Record<string, number>;
  /** This user's read position and the room's unread count. */
  readSeq: number;
  unread: number;
  /** Marks the room read up to `seq` (monotonic, coalesced). */
  read: (seq: number) => void;
  /** Loads the page before the oldest message held. */
  loadOlder: () => Promise<void>;
  /** Whether older messages exist (as far as the last page said). */
  hasMore: boolean;
  /** `false` right after a rejoin that could not resume: `messages` were reloaded. */
  recovered: boolean;
  joined: boolean;
  /** Why the room could not be joined (e.g. `forbidden`), or was left (`removed`). */
  error: SwitchboardError | undefined;
}

/**
 * Joins `name` while the component is mounted (shared with other
 * components in the same room: the last one to unmount leaves it) and
 * keeps the room's state.
 */
export function useRoom(name: string, options: UseRoomOptions = {}): RoomView {
  const client = useSwitchboard();
  const pageSize = options.pageSize ?? 50;
  const typingTimeoutMs = options.typingTimeoutMs ?? 5_000;
  const [messages, setMessages] = useState<MessageFrame[]>([]);
  const [hasMore, setHasMore] = useState(false);
  const [typing, setTyping] = useState<string[]>([]);
  const [presence, setPresence] = useState<string[]>([]);
  const [reads, setReads] = useState<Record<string, number>>({});
  const [position, setPosition] = useState({ readSeq: 0, unread: 0 });
  const [recovered, setRecovered] = useState(true);
  const [joined, setJoined] = useState(false);
  const [error, setError] = useState<SwitchboardError | undefined>();
  const roomRef = useRef<Room | null>(null);

  useEffect(() => {
    const room = client.room(name, { presence: options.presence === true });
    roomRef.current = room;
    roomHolds.hold(room);
    let live = true;
    let joinedOnce = false;
    const typingTimers = new Map<string, ReturnType<typeof setTimeout>>();
    setMessages([]);
    setHasMore(false);
    setTyping([]);
    setReads({});
    setError(undefined);

    const position = () => setPosition({ readSeq: room.readSeq, unread: room.unread });
    const loadLatest = () => {
      const epoch = room.epoch;
      room.history({ limit: pageSize }).then(
        (page) => {
          if (!live || page.epoch !== epoch) return;
          setMessages((held) => merge(held, page.messages));
          setHasMore(page.hasMore);
        },
        () => {}, // offline: the next joined loads it again
      );
    };
    const onJoined = (recoveredNow: boolean) => {
      setJoined(true);
      setRecovered(recoveredNow);
      setPresence([...room.presentUsers].sort());
      position();
      if (!recoveredNow) setMessages([]);
      loadLatest();
    };

    const offs = [
      room.on("message", (m) => {
        setMessages((held) => merge(held, [m]));
        position();
      }),
      room.on("joined", (j) => {
        // A rejoin that resumed needs nothing: the missed messages follow as `message`s.
        if (!j.recovered || !joinedOnce) onJoined(j.recovered);
        else position();
        joinedOnce = true;
      }),
      room.on("presence", (users) => setPresence([...users].sort())),
      room.on("typing", (user) => {
        clearTimeout(typingTimers.get(user));
        typingTimers.set(
          user,
          setTimeout(() => {
            typingTimers.delete(user);
            setTyping((users) => users.filter((u) => u !== user));
          }, typingTimeoutMs),
        );
        setTyping((users) => (users.includes(user) ? users : [...users, user].sort()));
      }),
      room.on("read", (user, seq) => {
        setReads((held) => (seq > (held[user] ?? 0) ? { ...held, [user]: seq } : held));
        position();
      }),
      room.on("reset", () => {
        setMessages([]);
        setHasMore(false);
        setReads({});
        position();
      }),
      room.on("removed", () => {
        setJoined(false);
        setPresence([]);
        setError(new SwitchboardError("removed", `removed from ${name}`));
      }),
    ];
    if (room.lastJoined) {
      // Another component joined it already: take the room as it stands.
      joinedOnce = true;
      onJoined(true);
    }
    room.join().catch((e: SwitchboardError) => {
      if (live) {
        setJoined(false);
        setError(e);
      }
    });
    return () => {
      live = false;
      for (const off of offs) off();
      for (const t of typingTimers.values()) clearTimeout(t);
      roomHolds.release(room, () => void room.leave());
    };
  }, [client, name, options.presence, pageSize, typingTimeoutMs]);

  const send = useCallback((body: string) => client.room(name).send(body), [client, name]);
  const sendTyping = useCallback(() => client.room(name).typing(), [client, name]);
  const read = useCallback(
    (seq: number) => {
      const room = client.room(name);
      room.markRead(seq);
      setPosition({ readSeq: room.readSeq, unread: room.unread });
    },
    [client, name],
  );
  const oldest = messages[0]?.seq;
  const loadOlder = useCallback(async () => {
    const room = roomRef.current;
    if (!room || oldest === undefined || oldest <= 1) return;
    const epoch = room.epoch;
    const page = await room.history({ beforeSeq: oldest, limit: pageSize });
    if (page.epoch !== epoch || room !== roomRef.current) return;
    setMessages((held) => merge(held, page.messages));
    setHasMore(page.hasMore);
  }, [oldest, pageSize]);

  return { messages, send, typing, sendTyping, presence, reads, ...position, read, loadOlder, hasMore, recovered, joined, error };
}

/** `held` and `more` as one list in seq order, each seq once. */
function merge(held: MessageFrame[], more: MessageFrame[]): MessageFrame[] {
  if (more.length === 1 && (held.length === 0 || (held[held.length - 1] as MessageFrame).seq < (more[0] as MessageFrame).seq)) {
    return [...held, more[0] as MessageFrame]; // the common case: one live message after the rest
  }
  const bySeq = new Map<number, MessageFrame>();
  for (const m of held) bySeq.set(m.seq, m);
  for (const m of more) bySeq.set(m.seq, m);
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq);
}
