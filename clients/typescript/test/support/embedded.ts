// Starts the embedded default (the real server: two edges, mock Kafka,
// SQLite, persister and router in one process) for a test file, and a TCP
// proxy that can cut or hold a client's connection to an edge.
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, existsSync } from "node:fs";
import { mkdtemp, readFile } from "node:fs/promises";
import net from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";

export interface Embedded {
  /** The two edges' WebSocket URLs. */
  ws: [string, string];
  http: [string, string];
  log: string;
  token(user: string, name?: string): Promise<string>;
  stop(): Promise<void>;
}

/** The release binary that `cargo build --release` (the README's first command) makes. */
export function binary(): string {
  const target = process.env.CARGO_TARGET_DIR ?? join(homedir(), ".cache/switchboard/target");
  const bin = process.env.SB_BIN ?? join(target, "release", "switchboard");
  if (!existsSync(bin)) throw new Error(`${bin} is missing: build it with \`cargo build --release\` (or set SB_BIN)`);
  return bin;
}

/** A port P with P and P+1 free, below the kernel's ephemeral range (an outgoing connection cannot take it). */
async function freePortPair(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if ((await free(port)) && (await free(port + 1))) return port;
  }
  throw new Error("no two consecutive free ports");
}

function free(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

export async function startEmbedded(): Promise<Embedded> {
  const dir = await mkdtemp(join(tmpdir(), "sb-sdk-"));
  const port = await freePortPair();
  const log = join(dir, "switchboard.log");
  const out = createWriteStream(log);
  await new Promise((resolve) => out.once("open", resolve));
  const child: ChildProcess = spawn(binary(), ["--host", "127.0.0.1", "--port", String(port), "--db", join(dir, "chat.db")], {
    stdio: ["ignore", out, out],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
  });
  let exited: string | undefined;
  child.once("exit", (code, signal) => {
    exited = `exited with ${code ?? signal}`;
  });
  const http: [string, string] = [`http://127.0.0.1:${port}`, `http://127.0.0.1:${port + 1}`];
  const deadline = Date.now() + 60_000;
  for (const base of http) {
    for (;;) {
      if (exited) throw new Error(`the embedded default ${exited}:\n${await readFile(log, "utf8")}`);
      if (Date.now() > deadline) throw new Error(`the embedded default is not ready in 60 s:\n${await readFile(log, "utf8")}`);
      const ok = await fetch(`${base}/healthz`).then((r) => r.ok, () => false);
      if (ok) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    ws: [`ws://127.0.0.1:${port}/ws`, `ws://127.0.0.1:${port + 1}/ws`],
    http,
    log,
    async token(user, name) {
      const query = new URLSearchParams({ user, ...(name ? { name } : {}) });
      const reply = await fetch(`${http[0]}/dev/token?${query}`);
      if (!reply.ok) throw new Error(`/dev/token: ${reply.status} ${await reply.text()}`);
      return ((await reply.json()) as { token: string }).token;
    },
    async stop() {
      if (exited) return;
      const gone = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await gone;
      clearTimeout(timer);
    },
  };
}

/**
 * A TCP proxy in front of one edge. `hold()` stops what the edge sends from
 * reaching the client (an ack that never arrives), `cut()` severs every
 * connection at once, `refuse(true)` turns new connections away.
 */
export class Proxy {
  private server = net.createServer((client) => this.accept(client));
  private pairs = new Set<{ client: net.Socket; upstream: net.Socket }>();
  private holding = false;
  private refusing = false;
  /** Bytes that went from the client to the edge. */
  upstreamBytes = 0;
  port = 0;

  constructor(private readonly target: string) {}

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
    const url = new URL(this.target);
    return `ws://127.0.0.1:${this.port}${url.pathname}`;
  }

  private accept(client: net.Socket): void {
    if (this.refusing) {
      client.destroy();
      return;
    }
    const url = new URL(this.target);
    const upstream = net.connect(Number(url.port), url.hostname);
    const pair = { client, upstream };
    this.pairs.add(pair);
    client.on("data", (chunk) => {
      this.upstreamBytes += chunk.length;
      upstream.write(chunk);
    });
    upstream.on("data", (chunk) => {
      if (!this.holding) client.write(chunk);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      this.pairs.delete(pair);
    };
    client.on("close", end);
    upstream.on("close", end);
    client.on("error", end);
    upstream.on("error", end);
  }

  hold(on = true): void {
    this.holding = on;
  }

  refuse(on: boolean): void {
    this.refusing = on;
  }

  cut(): void {
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
    this.holding = false;
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/** Resolves when `check` holds, polling; rejects after `ms` with `what`. */
export async function until(check: () => boolean, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
