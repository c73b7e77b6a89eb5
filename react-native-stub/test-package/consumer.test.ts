/**
 * The package as an app developer gets it: `npm pack`, a new React Native project in a
 * temporary directory that installs the tarball and its peers (from npm's cache when it
 * has them, else the registry), type-checks test-package/consumer/App.tsx against the
 * published .d.ts, bundles it with Metro for android and ios, and compiles each bundle with
 * the hermesc React Native ships (hermes-compiler). Sizes go to stdout.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { before, describe, it } from "node:test";

const STUB = resolve(import.meta.dirname, "..");
const stub = JSON.parse(readFileSync(join(STUB, "package.json"), "utf8"));
const installed = (name: string): string =>
  JSON.parse(readFileSync(join(STUB, "node_modules", name, "package.json"), "utf8")).version as string;

const run = (cmd: string, args: string[], cwd: string): string =>
  execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: "skip" } });

const kB = (bytes: number): string => `${(bytes / 1024).toFixed(1)} kB`;

let app: string;
let tarball: string;

describe("the npm package in a new React Native app", { timeout: 600_000 }, () => {
  before(() => {
    const work = mkdtempSync(join(tmpdir(), "modelsync-consumer-"));
    const packed = JSON.parse(run("npm", ["pack", "--json", "--pack-destination", work], STUB)) as {
      filename: string;
      size: number;
      unpackedSize: number;
      files: { path: string }[];
    }[];
    const info = packed[0]!;
    tarball = join(work, info.filename);
    console.log(`package: ${info.filename} ${kB(info.size)} (${kB(info.unpackedSize)} unpacked, ${info.files.length} files)`);
    app = join(work, "app");
    cpSync(join(STUB, "test-package", "consumer"), app, { recursive: true });
    cpSync(join(STUB, "example", "root.example.json"), join(app, "root.json"));
    const peers = Object.fromEntries(Object.keys(stub.peerDependencies).map((n) => [n, installed(n)]));
    const tools = ["typescript", "@types/react", "@react-native/babel-preset", "@react-native/metro-config", "metro", "@babel/core"];
    writeFileSync(
      join(app, "package.json"),
      JSON.stringify(
        {
          name: "consumer",
          private: true,
          dependencies: { "@modelsync/react-native-client": `file:${tarball}`, ...peers },
          devDependencies: Object.fromEntries(tools.map((n) => [n, installed(n)])),
        },
        null,
        2,
      ),
    );
    writeFileSync(join(app, ".npmrc"), "onnxruntime-node-install=skip\n");
    run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts"], app);
  });

  it("ships built JavaScript and declarations only, with the exports map", () => {
    const pkg = join(app, "node_modules", "@modelsync", "react-native-client");
    const manifest = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8"));
    assert.equal(manifest.private, undefined);
    assert.deepEqual(Object.keys(manifest.exports), [".", "./react", "./node", "./package.json"]);
    const files = readdirSync(pkg, { recursive: true }).map(String);
    assert.ok(files.includes(join("dist", "esm", "react", "index.d.ts")));
    assert.ok(files.includes(join("dist", "cjs", "node", "index.js")));
    assert.ok(!files.some((f) => f.endsWith(".ts") && !f.endsWith(".d.ts")), "no TypeScript sources");
    const core = run(process.execPath, ["-e", "console.log(Object.keys(require('@modelsync/react-native-client')).length)"], app);
    assert.ok(Number(core) > 20, "the core loads under Node's require");
  });

  it("type-checks App.tsx against the published declarations", () => {
    run(process.execPath, [join(app, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.json"], app);
  });

  for (const platform of ["android", "ios"]) {
    it(`bundles with Metro for ${platform} and compiles with hermesc`, () => {
      const out = join(app, `index.${platform}.js`); // Metro adds ".js" to any other name
      run(process.execPath, ["bundle.cjs", platform, out], app);
      const js = readFileSync(out, "utf8");
      assert.ok(js.includes("createReactNativeClient") || js.length > 100_000);
      assert.ok(js.includes("listSupportedBackends"), "onnxruntime-react-native is in the bundle");
      const hermesc = join(app, "node_modules", "hermes-compiler", "hermesc", "linux64-bin", "hermesc");
      const hbc = `${out}.hbc`;
      run(hermesc, ["-emit-binary", "-O", "-w", "-out", hbc, out], app);
      console.log(`${platform}: Metro bundle ${kB(statSync(out).size)}, Hermes bytecode ${kB(statSync(hbc).size)}`);
    });
  }
});
