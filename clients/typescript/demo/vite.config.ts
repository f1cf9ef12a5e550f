// Builds the demo chat into edge/src/demo/ (index.html and demo.js), which
// the edge embeds with include_str!. The output is committed, not built by
// cargo: the README's first command (`cargo run --release`) must work with
// nothing but Rust installed. `npm run demo:check` (in CI) rebuilds it and
// fails when the committed files differ from what the sources make.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const out = process.env.SB_DEMO_OUT ?? fileURLToPath(new URL("../../../edge/src/demo", import.meta.url));

export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  base: "/",
  logLevel: "warn",
  build: {
    outDir: out,
    emptyOutDir: true,
    assetsDir: "",
    modulePreload: false,
    reportCompressedSize: false,
    rollupOptions: {
      output: { entryFileNames: "demo.js", chunkFileNames: "demo-[name].js", assetFileNames: "[name][extname]" },
    },
  },
});
