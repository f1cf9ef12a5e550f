// The SDK's size as an app ships it: bundled, minified and gzipped. The
// React bindings are measured on their own (react itself left out, the
// SDK they import left in, so "react bindings" = SDK + bindings).
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const entries = { sdk: "src/index.ts", "sdk + react bindings": "src/react.tsx" };
for (const [name, entry] of Object.entries(entries)) {
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    minify: true,
    format: "esm",
    write: false,
    target: "es2022",
    jsx: "automatic",
    external: ["react", "react/jsx-runtime"],
  });
  const code = result.outputFiles[0].contents;
  console.log(`${name}: ${code.length} bytes minified, ${gzipSync(code, { level: 9 }).length} bytes gzipped`);
}
