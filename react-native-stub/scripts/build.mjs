// The published build: dist/esm (ES modules, what Metro and bundlers read), dist/cjs
// (CommonJS, what Node's require and the ./node entry read) and .d.ts files in dist/esm.
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";

const tsc = (...args) => execFileSync(process.execPath, ["node_modules/typescript/bin/tsc", ...args], { stdio: "inherit" });
rmSync("dist", { recursive: true, force: true });
tsc("-p", "tsconfig.build.json");
// Sources are ES modules with extensionless imports (bundler resolution): fine for Metro;
// Node gets the CommonJS copy, where extensionless require() resolves.
tsc("-p", "tsconfig.build.json", "--module", "commonjs", "--moduleResolution", "node10", "--verbatimModuleSyntax", "false", "--declaration", "false", "--outDir", "dist/cjs");
mkdirSync("dist/cjs", { recursive: true });
writeFileSync("dist/cjs/package.json", JSON.stringify({ type: "commonjs" }) + "\n");
