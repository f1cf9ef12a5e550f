import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts", "test/**/*.test.tsx"],
    // The integration tests start a server each; one file at a time on small machines.
    fileParallelism: false,
    testTimeout: 60_000,
  },
});
