// Builds the console: TypeScript from ../../proto (protoc + protoc-gen-es, into src/gen/, not
// committed), a type check (tsc --noEmit), then one esbuild bundle into dist/:
//
//   dist/index.html                  no-store; names the hashed assets below
//   dist/assets/app-<hash>.js        content-hashed, so they may be cached
//   dist/assets/app-<hash>.css
//
// Skips everything when dist/.stamp holds the hash of every input (protos, src/, the lockfile,
// this script): `node scripts/build.mjs` is cheap to call on every test run.
// Usage: node scripts/build.mjs [--gen-only] [--force]
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const protoRoot = path.resolve(root, "../../proto");
const gen = path.join(root, "src/gen");
const dist = path.join(root, "dist");
const args = new Set(process.argv.slice(2));

function walk(dir, out = []) {
  if (!fs.existsSync(dir)) return out;
  for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      if (p !== gen) walk(p, out);
    } else out.push(p);
  }
  return out;
}

const protos = walk(path.join(protoRoot, "traceflow")).filter((p) => p.endsWith(".proto"));
const inputs = [...protos, ...walk(path.join(root, "src")), path.join(root, "package-lock.json"),
  path.join(root, "tsconfig.json"), fileURLToPath(import.meta.url)];
const h = createHash("sha256");
for (const f of inputs) {
  h.update(path.relative(root, f));
  h.update(fs.readFileSync(f));
}
const stamp = h.digest("hex");
const stampFile = path.join(dist, ".stamp");
if (!args.has("--force") && !args.has("--gen-only") && fs.existsSync(stampFile)
    && fs.readFileSync(stampFile, "utf8") === stamp && fs.existsSync(path.join(dist, "index.html"))) {
  console.log("console: dist/ is up to date");
  process.exit(0);
}

const bin = (name) => path.join(root, "node_modules/.bin", name);

// 1. Generated TypeScript from the .proto files (Debian's protoc + protoc-gen-es).
fs.rmSync(gen, { recursive: true, force: true });
fs.mkdirSync(gen, { recursive: true });
execFileSync("protoc", [
  `--plugin=protoc-gen-es=${bin("protoc-gen-es")}`,
  `--es_out=${gen}`,
  "--es_opt=target=ts,import_extension=js",
  `-I${protoRoot}`,
  ...protos.map((p) => path.relative(protoRoot, p)),
], { stdio: "inherit" });
if (args.has("--gen-only")) process.exit(0);

// 2. Types.
try {
  execFileSync(bin("tsc"), ["--noEmit", "-p", root], { stdio: "inherit" });
} catch {
  console.error("console: type check failed (see above)");
  process.exit(1);
}

// 3. Bundle.
const esbuild = await import("esbuild");
fs.rmSync(dist, { recursive: true, force: true });
const result = await esbuild.build({
  entryPoints: { app: path.join(root, "src/main.ts"), style: path.join(root, "src/console.css") },
  bundle: true,
  minify: true,
  sourcemap: false,
  format: "esm",
  target: ["es2022"],
  outdir: path.join(dist, "assets"),
  entryNames: "[name]-[hash]",
  metafile: true,
  logLevel: "warning",
});
const outputs = Object.entries(result.metafile.outputs);
const asset = (entry) => {
  const hit = outputs.find(([, o]) => o.entryPoint && o.entryPoint.endsWith(entry));
  if (!hit) throw new Error(`esbuild produced no output for ${entry}`);
  return "/assets/" + path.basename(hit[0]);
};
const html = fs.readFileSync(path.join(root, "src/index.html"), "utf8")
  .replace("{{APP_JS}}", asset("src/main.ts"))
  .replace("{{APP_CSS}}", asset("src/console.css"));
fs.writeFileSync(path.join(dist, "index.html"), html);
fs.writeFileSync(stampFile, stamp);
console.log(`console: built ${path.relative(process.cwd(), dist) || "."} (${outputs.length} assets)`);
