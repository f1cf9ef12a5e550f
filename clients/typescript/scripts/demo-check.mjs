// Fails when edge/src/demo/ (committed, embedded by the edge) is not what
// the demo's sources build to: rebuilds into a temporary directory and
// compares byte for byte.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const committed = fileURLToPath(new URL("../../../edge/src/demo", import.meta.url));
const fresh = mkdtempSync(join(tmpdir(), "sb-demo-"));
try {
  execFileSync("npx", ["vite", "build", "--config", "demo/vite.config.ts"], {
    cwd: fileURLToPath(new URL("..", import.meta.url)),
    env: { ...process.env, SB_DEMO_OUT: fresh },
    stdio: "inherit",
  });
  const names = (dir) => readdirSync(dir).sort();
  const stale = [];
  const all = new Set([...names(committed), ...names(fresh)]);
  for (const name of all) {
    let a = null;
    let b = null;
    try { a = readFileSync(join(committed, name)); } catch {}
    try { b = readFileSync(join(fresh, name)); } catch {}
    if (!a || !b || !a.equals(b)) stale.push(name);
  }
  if (stale.length) {
    console.error(`edge/src/demo/ is stale (${stale.join(", ")}): run \`npm run demo\` in clients/typescript and commit it`);
    process.exit(1);
  }
  console.log("edge/src/demo/ matches the demo's sources");
} finally {
  rmSync(fresh, { recursive: true, force: true });
}
