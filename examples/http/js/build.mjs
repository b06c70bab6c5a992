// Builds app.js into a wasi:http/proxy component with componentize-js (the library
// behind `jco componentize`): `node build.mjs OUT.wasm`. The WIT is ../../wit.
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const out = process.argv[2];
if (!out) {
  console.error("usage: node build.mjs OUT.wasm");
  process.exit(2);
}
const { component } = await componentize({
  sourcePath: here("./app.js"),
  witPath: here("../../wit"),
  worldName: "http",
});
await writeFile(out, component);
