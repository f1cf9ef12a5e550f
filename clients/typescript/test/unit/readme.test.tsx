// @vitest-environment jsdom
// The README's React example, run as written (its code block is read from
// README.md): a stand-in socket plays the server, a stubbed fetch answers
// /dev/token. The demo's browser test runs the same bindings in Chromium.
import { readFileSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { act, cleanup, render, screen } from "@testing-library/react";
import { afterEach, expect, it, vi } from "vitest";
import { FakeSocket, message } from "./fake-socket.js";

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
  vi.useRealTimers();
});

it("the README's ten-line React example connects, shows messages and sends", async () => {
  // (Paths from the package's folder, where vitest runs: under jsdom
  // import.meta.url is not a file URL.)
  const readme = readFileSync(resolve("../../README.md"), "utf8");
  const code = readme.match(/## Clients[\s\S]*?```tsx\n([\s\S]*?)```/)?.[1];
  expect(code, "README.md has a tsx block under ## Clients").toBeTruthy();
  expect(code!.trim().split("\n").length).toBeLessThanOrEqual(10);
  const file = resolve("test/unit/.readme-example.tsx");
  writeFileSync(file, code!);

  vi.useFakeTimers();
  FakeSocket.reset();
  vi.stubGlobal("WebSocket", FakeSocket);
  const fetched: string[] = [];
  vi.stubGlobal("fetch", async (url: string) => {
    fetched.push(url);
    return { json: async () => ({ token: "t-alice" }) };
  });
  const { App } = await import(/* @vite-ignore */ pathToFileURL(file).href);
  render(<App />);
  await act(async () => vi.advanceTimersByTimeAsync(1));
  const socket = FakeSocket.last();
  expect(fetched).toEqual(["/dev/token?user=alice"]);
  expect(socket.url).toBe("ws://127.0.0.1:8080/ws?token=t-alice");
  await act(async () => socket.welcome("alice"));
  const join = socket.of("join")[0]!;
  expect(join.room).toBe("general");
  await act(async () =>
    socket.receive({ type: "joined", ref: join.ref, room: "general", epoch: 1, last_seq: 0, recovered: true, read_seq: 0, unread: 0 }),
  );
  await act(async () => socket.receive(message("general", 1)));
  expect(screen.getByText("Bob: #1")).toBeTruthy();
  await act(async () => screen.getByText("Say hi").click());
  expect(socket.of("send").map((f) => [f.room, f.body])).toEqual([["general", "hi"]]);
});
