import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const src = (file: string) => fileURLToPath(new URL(`./src/${file}`, import.meta.url));

export default defineConfig({
  resolve: {
    // What an app imports (the README's example) resolves to the sources.
    alias: [
      { find: /^@switchboard\/client\/react$/, replacement: src("react.tsx") },
      { find: /^@switchboard\/client$/, replacement: src("index.ts") },
    ],
  },
  test: {
    include: ["test/**/*.test.ts", "test/**/*.test.tsx"],
    // The integration tests start a server each; one file at a time on small machines.
    fileParallelism: false,
    testTimeout: 60_000,
  },
});
