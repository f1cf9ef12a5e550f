// @vitest-environment jsdom
import { act, cleanup, render, screen } from "@testing-library/react";
import { StrictMode, useState } from "react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Switchboard } from "../../src/client.js";
import { SwitchboardProvider, useConnectionState, useRoom, useSwitchboard } from "../../src/react.js";
import { FakeSocket, message } from "./fake-socket.js";

// React's act() warns unless the environment says it is a test.
(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

beforeEach(() => {
  vi.useFakeTimers();
  FakeSocket.reset();
});
afterEach(() => {
  cleanup();
  vi.useRealTimers();
});

const options = { urls: "ws://a/ws", token: "t", WebSocket: FakeSocket, random: () => 0 };

async function settle(): Promise<void> {
  await act(async () => {
    await vi.advanceTimersByTimeAsync(1);
  });
}

/** Plays the server: welcome, then answers the first join of `room`. */
async function serve(room: string, lastSeq = 0): Promise<FakeSocket> {
  const socket = FakeSocket.last();
  await act(async () => socket.welcome("alice"));
  const join = socket.of("join").find((f) => f.room === room);
  if (!join) throw new Error(`no join of ${room}: ${JSON.stringify(socket.sent)}`);
  await act(async () =>
    socket.receive({ type: "joined", ref: join.ref, room, epoch: 1, last_seq: lastSeq, recovered: true, read_seq: 0, unread: 0 }),
  );
  return socket;
}

let client: Switchboard | undefined;
function Probe({ room, onMessages }: { room: string; onMessages?: (n: number) => void }) {
  client = useSwitchboard();
  const view = useRoom(room, { presence: true });
  const state = useConnectionState();
  onMessages?.(view.messages.length);
  return (
    <div>
      <p data-testid="state">{state}</p>
      <p data-testid="messages">{view.messages.map((m) => m.body).join(",")}</p>
      <p data-testid="presence">{view.presence.join(",")}</p>
    </div>
  );
}

describe("React bindings", () => {
  it("StrictMode: one connection, one join, and no listener added twice", async () => {
    render(
      <StrictMode>
        <SwitchboardProvider {...options}>
          <Probe room="r" />
        </SwitchboardProvider>
      </StrictMode>,
    );
    await settle();
    expect(FakeSocket.all).toHaveLength(1);
    const socket = await serve("r");
    await settle();
    expect(socket.of("join")).toHaveLength(1);
    expect(socket.of("leave")).toHaveLength(0);
    const room = client!.room("r");
    expect(room.listenerCount("message")).toBe(1);
    expect(client!.listenerCount("state")).toBe(1);
    expect(screen.getByTestId("state").textContent).toBe("connected");
  });

  it("a listener is not re-added on re-render: a message shows once however often the component renders", async () => {
    let bump: () => void = () => {};
    function Parent() {
      const [n, setN] = useState(0);
      bump = () => setN((x) => x + 1);
      return <Probe room="r" key="probe" onMessages={() => n} />;
    }
    render(
      <SwitchboardProvider {...options}>
        <Parent />
      </SwitchboardProvider>,
    );
    await settle();
    const socket = await serve("r");
    // The first page of history the hook asks for on join: empty.
    const history = socket.of("history")[0]!;
    await act(async () => socket.receive({ type: "history", ref: history.ref, room: "r", epoch: 1, messages: [], has_more: false }));
    for (let i = 0; i < 25; i++) await act(async () => bump());
    const room = client!.room("r");
    expect(room.listenerCount("message")).toBe(1);
    await act(async () => socket.receive(message("r", 1)));
    expect(screen.getByTestId("messages").textContent).toBe("#1");
    cleanup();
    await settle();
    expect(room.listenerCount("message")).toBe(0);
    expect(room.listenerCount("joined")).toBe(0);
    expect(client!.listenerCount("state")).toBe(0);
    expect(socket.closedWith?.code).toBe(1000);
  });

  it("loads the latest page on join, merges live messages, and tracks presence", async () => {
    render(
      <SwitchboardProvider {...options}>
        <Probe room="r" />
      </SwitchboardProvider>,
    );
    await settle();
    const socket = FakeSocket.last();
    await act(async () => socket.welcome("alice"));
    const join = socket.of("join")[0]!;
    expect(join).toMatchObject({ presence: true });
    await act(async () =>
      socket.receive({ type: "joined", ref: join.ref, room: "r", epoch: 1, last_seq: 3, recovered: true, read_seq: 0, unread: 3, present: ["alice", "bob"] }),
    );
    await act(async () => socket.receive(message("r", 4))); // live, before the page arrives
    const history = socket.of("history")[0]!;
    expect(history).toMatchObject({ room: "r", limit: 50 });
    const page = [3, 2, 1].map((seq) => message("r", seq)).map((m) => m as Extract<typeof m, { type: "message" }>);
    await act(async () => socket.receive({ type: "history", ref: history.ref, room: "r", epoch: 1, messages: page, has_more: false }));
    expect(screen.getByTestId("messages").textContent).toBe("#1,#2,#3,#4");
    expect(screen.getByTestId("presence").textContent).toBe("alice,bob");
    await act(async () => socket.receive({ type: "presence", room: "r", joined: ["carol"], left: ["bob"] }));
    expect(screen.getByTestId("presence").textContent).toBe("alice,carol");
  });

  it("two components in one room share one join; the room is left when the last unmounts", async () => {
    function Two({ both }: { both: boolean }) {
      return (
        <>
          <Probe room="r" />
          {both && <Probe room="r" />}
        </>
      );
    }
    const { rerender } = render(
      <SwitchboardProvider {...options}>
        <Two both />
      </SwitchboardProvider>,
    );
    await settle();
    const socket = await serve("r");
    rerender(
      <SwitchboardProvider {...options}>
        <Two both={false} />
      </SwitchboardProvider>,
    );
    await settle();
    expect(socket.of("join")).toHaveLength(1);
    expect(socket.of("leave")).toHaveLength(0);
    cleanup();
    await settle();
    expect(socket.of("leave")).toHaveLength(0); // the socket closed with the provider instead
    expect(socket.closedWith?.code).toBe(1000);
  });

  it("a client the app passes in is connected but not closed by the provider", async () => {
    const app = new Switchboard(options);
    render(
      <StrictMode>
        <SwitchboardProvider client={app}>
          <Probe room="r" />
        </SwitchboardProvider>
      </StrictMode>,
    );
    await settle();
    expect(FakeSocket.all).toHaveLength(1);
    cleanup();
    await settle();
    expect(FakeSocket.last().closedWith).toBeUndefined();
    app.close();
  });
});
