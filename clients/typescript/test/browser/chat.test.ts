// The demo chat (built on the SDK and its React bindings, served by the
// embedded default) in a real browser: Debian's Chromium driven by
// playwright-core (scripts/chromium.sh installs it).
import { existsSync, mkdirSync } from "node:fs";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Embedded, startEmbedded } from "../support/embedded.js";

const CHROMIUM = process.env.SB_CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = new URL("../../test-results/", import.meta.url);

let server: Embedded;
let browser: Browser;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run scripts/chromium.sh install`);
  server = await startEmbedded();
  // As root (CI machines, containers) Chromium needs --no-sandbox.
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
}, 90_000);

afterAll(async () => {
  await browser?.close();
  await server?.stop();
});

interface Chatter {
  context: BrowserContext;
  page: Page;
}

/** A browser context on one edge's demo page, signed in as `name`, in `room`. */
async function open(edge: 0 | 1, name: string, room: string): Promise<Chatter> {
  const context = await browser.newContext({ viewport: { width: 900, height: 600 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`${name}'s page: ${e.message}`));
  await page.goto(`${server.http[edge]}/`);
  await page.getByTestId("name").fill(name);
  await page.getByTestId("connect").click();
  await page.getByTestId("status").filter({ hasText: `connected as ${name}` }).waitFor();
  await page.getByTestId("room").fill(room);
  await page.getByTestId("join").click();
  await page.getByTestId("body").waitFor();
  return { context, page };
}

async function say(chatter: Chatter, text: string): Promise<void> {
  await chatter.page.getByTestId("body").fill(text);
  await chatter.page.getByTestId("send").click();
}

/** The message lines shown, as "sender: body". */
async function shown(page: Page): Promise<string[]> {
  return page.locator("[data-testid=log] .msg").evaluateAll((lines) =>
    lines.map((l) => `${l.querySelector(".who")?.textContent ?? ""}${l.querySelector(".text")?.textContent ?? ""}`),
  );
}

async function waitShown(page: Page, count: number): Promise<string[]> {
  await page.locator("[data-testid=log] .msg").nth(count - 1).waitFor({ timeout: 20_000 });
  return shown(page);
}

describe("the demo chat in Chromium", () => {
  it("two browsers on the two edges chat both ways, and one that was offline shows what it missed once, in order", async () => {
    const room = `browser-${process.pid}`;
    const alice = await open(0, "alice", room);
    const bob = await open(1, "bob", room);
    await expect.poll(() => alice.page.getByTestId("status").textContent(), { timeout: 15_000 }).toContain("edge-1");
    await expect.poll(() => bob.page.getByTestId("status").textContent(), { timeout: 15_000 }).toContain("edge-2");
    await expect.poll(() => alice.page.getByTestId("here").textContent(), { timeout: 15_000 }).toBe("alice, bob");

    await say(alice, "hi bob");
    expect(await waitShown(bob.page, 1)).toEqual(["alice: hi bob"]);
    await say(bob, "hi alice");
    expect(await waitShown(alice.page, 2)).toEqual(["alice: hi bob", "bob: hi alice"]);

    // Bob's browser goes offline: his socket drops and the page says so.
    await bob.context.setOffline(true);
    await expect.poll(() => bob.page.getByTestId("status").textContent(), { timeout: 30_000 }).toMatch(/reconnecting/);
    const missed = Array.from({ length: 20 }, (_, i) => `missed ${i + 1}`);
    for (const text of missed) await say(alice, text);
    expect(await waitShown(alice.page, 22)).toHaveLength(22);
    expect(await shown(bob.page)).toHaveLength(2);
    await bob.context.setOffline(false);
    await expect.poll(() => bob.page.getByTestId("status").textContent(), { timeout: 30_000 }).toContain("connected as bob");
    const expected = ["alice: hi bob", "bob: hi alice", ...missed.map((t) => `alice: ${t}`)];
    expect(await waitShown(bob.page, 22)).toEqual(expected);
    // And nothing twice a moment later (a late duplicate would add a line).
    await say(alice, "back?");
    expect(await waitShown(bob.page, 23)).toEqual([...expected, "alice: back?"]);
    const seqs = await bob.page.locator("[data-testid=log] .msg").evaluateAll((l) => l.map((e) => Number(e.getAttribute("data-seq"))));
    expect(seqs).toEqual(Array.from({ length: 23 }, (_, i) => i + 1));
    // Bob's edge forgot the room while he was away; who is here settles
    // within a presence refresh (10 s; PROTOCOL.md, Presence).
    await expect.poll(() => bob.page.getByTestId("here").textContent(), { timeout: 20_000 }).toBe("alice, bob");

    mkdirSync(ARTIFACTS, { recursive: true });
    await bob.page.screenshot({ path: new URL("chat.png", ARTIFACTS).pathname, fullPage: true });
    await alice.context.close();
    await bob.context.close();
  });
});
