/** The core's cross-language vectors under a Hermes runtime: the same cases as
 * test/vectors.test.ts (test/vectorCases.ts), bundled with esbuild, lowered with React
 * Native's Babel preset (Hermes has no classes or async functions of its own; Metro lowers
 * them the same way) and run by the `hermes` CLI of hermes-engine-cli. That CLI (0.12.0,
 * 2022) is the newest Hermes runtime on npm; React Native 0.83 ships a newer engine inside
 * the app, whose compiler (hermes-compiler) the consumer test uses. */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { it } from "node:test";

import { allProblems } from "../test/vectorCases";

const here = import.meta.dirname;
const stub = join(here, "..");
const VECTORS = join(stub, "..", "tests", "vectors");
const require = createRequire(import.meta.url);

function vectorFiles(dir: string, suffix = ".json"): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? vectorFiles(join(dir, e.name), suffix) : e.name.endsWith(suffix) ? [join(dir, e.name)] : [],
  );
}

it("every vector, the offline packs' too, reaches Python's verdict under Hermes", async () => {
  const hermes = join(stub, "node_modules", "hermes-engine-cli", `${process.platform === "darwin" ? "osx" : "linux64"}-bin`, "hermes");
  assert.ok(existsSync(hermes), `${hermes} missing: npm ci installs hermes-engine-cli`);
  const vectors: Record<string, unknown> = {};
  for (const file of vectorFiles(VECTORS)) vectors[relative(VECTORS, file)] = JSON.parse(readFileSync(file, "utf8"));
  const packs: Record<string, string> = {};
  for (const file of vectorFiles(VECTORS, ".mspack")) packs[relative(VECTORS, file)] = readFileSync(file).toString("base64");
  const packBytes = (rel: string): Uint8Array => new Uint8Array(Buffer.from(packs[rel]!, "base64"));

  const esbuild = await import("esbuild");
  const bundled = await esbuild.build({
    entryPoints: [join(here, "run.ts")], bundle: true, format: "iife", target: "es2020", write: false,
    banner: { js: `var __VECTORS__ = ${JSON.stringify(vectors)}; var __PACKS__ = ${JSON.stringify(packs)};` },
    logLevel: "warning",
  });
  const babel = require("@babel/core") as typeof import("@babel/core");
  const lowered = babel.transformSync(bundled.outputFiles[0]!.text, {
    babelrc: false, configFile: false, sourceType: "script", compact: true,
    presets: [["module:@react-native/babel-preset", { enableBabelRuntime: false }]],
  });
  const script = join(mkdtempSync(join(tmpdir(), "modelsync-hermes-")), "vectors.js");
  writeFileSync(script, lowered!.code!);

  const out = execFileSync(hermes, [script], { encoding: "utf8", timeout: 120_000 });
  const node = allProblems((rel) => vectors[rel], packBytes);
  assert.deepEqual(node.problems, []);
  assert.match(out, new RegExp(`^hermes: ${node.checked} checks, 0 mismatches$`, "m"), out);
});
