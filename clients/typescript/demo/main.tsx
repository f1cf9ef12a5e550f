// The embedded default's demo chat, built on the SDK and its React
// bindings. `npm run demo` builds it into edge/src/demo/, which the edge
// serves at `/` in dev mode (see vite.config.ts for why the output is
// committed).
import { type FormEvent, StrictMode, useEffect, useRef, useState } from "react";
import { createRoot } from "react-dom/client";
import { SwitchboardProvider, useConnectionState, useRoom, useSwitchboard } from "../src/react.js";

function App() {
  const [who, setWho] = useState<{ user: string; name: string } | null>(null);
  if (!who) return <Login onLogin={setWho} />;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const token = () =>
    fetch(`/dev/token?user=${encodeURIComponent(who.user)}&name=${encodeURIComponent(who.name)}`)
      .then((r) => r.json())
      .then((j: { token: string }) => j.token);
  return (
    <SwitchboardProvider urls={[`${proto}://${location.host}/ws`]} token={token}>
      <Chat />
    </SwitchboardProvider>
  );
}

/** A sidebar form of one text field and its button; `id` and `action` are their test ids. */
function OneField(props: {
  label: string;
  id: string;
  button: string;
  action: string;
  initial?: string;
  onSubmit: (value: string) => void;
}) {
  const [value, setValue] = useState(props.initial ?? "");
  const submit = (e: FormEvent) => {
    e.preventDefault();
    props.onSubmit(value.trim());
  };
  return (
    <form className="field" onSubmit={submit}>
      <label>
        {props.label} <input data-testid={props.id} size={14} value={value} onChange={(e) => setValue(e.target.value)} />
      </label>
      <button data-testid={props.action}>{props.button}</button>
    </form>
  );
}

function Login({ onLogin }: { onLogin: (who: { user: string; name: string }) => void }) {
  const login = (name: string) => {
    const display = name || "guest";
    const user = display.toLowerCase().replace(/[^a-z0-9_.:-]/g, "-").slice(0, 64) || "guest";
    onLogin({ user, name: display });
  };
  return (
    <aside>
      <OneField label="Your name" id="name" button="Connect" action="connect" onSubmit={login} />
    </aside>
  );
}

function Chat() {
  const client = useSwitchboard();
  const state = useConnectionState();
  const [rooms, setRooms] = useState<string[]>([]);
  const [current, setCurrent] = useState<string | null>(null);
  const [unread, setUnread] = useState<Record<string, number>>({});
  const join = (room: string) => {
    if (!room) return;
    if (!rooms.includes(room)) setRooms([...rooms, room]);
    setCurrent(room);
  };
  return (
    <>
      <aside>
        <div data-testid="status">
          {state === "connected" ? `connected as ${client.user} to ${client.node}` : state}
        </div>
        <OneField label="Join room" id="room" button="Join" action="join" initial="lobby" onSubmit={join} />
        <h4>Rooms</h4>
        {rooms.map((r) => (
          <div key={r} className={`room${r === current ? " active" : ""}`} onClick={() => setCurrent(r)}>
            #{r}
            {unread[r] ? ` (${unread[r]})` : ""}
          </div>
        ))}
      </aside>
      <main>
        {rooms.map((r) => (
          <RoomPane
            key={r}
            name={r}
            active={r === current}
            onUnread={(n) => setUnread((u) => (u[r] === n ? u : { ...u, [r]: n }))}
          />
        ))}
      </main>
    </>
  );
}

function RoomPane({ name, active, onUnread }: { name: string; active: boolean; onUnread: (n: number) => void }) {
  const room = useRoom(name, { presence: true });
  const [body, setBody] = useState("");
  const [error, setError] = useState<string | null>(null);
  const log = useRef<HTMLDivElement>(null);
  const last = room.messages.at(-1)?.seq ?? 0;

  // Read what is shown: the active room, in a visible tab.
  useEffect(() => {
    if (active && last > 0 && document.visibilityState === "visible") room.read(last);
  }, [active, last, room.read]);
  useEffect(() => onUnread(active ? 0 : room.unread), [active, room.unread, onUnread]);
  useEffect(() => {
    if (active && log.current) log.current.scrollTop = log.current.scrollHeight;
  }, [active, last]);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (!body) return;
    setBody("");
    room.send(body).then(
      () => setError(null),
      (err: Error) => setError(err.message),
    );
  };
  if (!active) return null;
  return (
    <>
      <div style={{ display: "flex", gap: 12, padding: "6px 12px", borderBottom: "1px solid #e5e7eb", fontSize: 13 }}>
        <span>
          <b>Here:</b> <span data-testid="here">{room.presence.join(", ")}</span>
        </span>
        <span className="sys" data-testid="reads">
          {Object.entries(room.reads)
            .sort()
            .map(([u, seq]) => `${u} read #${seq}`)
            .join(", ")}
        </span>
        <span className="sys" data-testid="typing">
          {room.typing.length ? `${room.typing.join(", ")} typing…` : ""}
        </span>
      </div>
      {room.hasMore && (
        <button data-testid="older" onClick={() => void room.loadOlder()}>
          Load older messages
        </button>
      )}
      <div className="log" ref={log} data-testid="log">
        {!room.recovered && <div className="sys">(some history was skipped)</div>}
        {room.error && <div className="err">{room.error.message}</div>}
        {room.messages.map((m) => (
          <div className="msg" key={m.seq} data-seq={m.seq}>
            <span className="who">{m.sender_name}: </span>
            <span className="text">{m.body}</span>
            <span className="seq"> #{m.seq}</span>
          </div>
        ))}
        {error && <div className="err">{error}</div>}
      </div>
      <form onSubmit={submit}>
        <input
          className="body"
          data-testid="body"
          placeholder={`Message #${name}`}
          autoComplete="off"
          value={body}
          onChange={(e) => {
            setBody(e.target.value);
            room.sendTyping();
          }}
        />
        <button data-testid="send">Send</button>
      </form>
    </>
  );
}

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App />
    </StrictMode>,
  );
}
