/**
 * The `ReactNativeFs` TurboModule of @dr.pogodin/react-native-fs, backed by node:fs, so
 * its JavaScript (base64 over the bridge, constants, stat and readDir shaping) and our
 * ReactNativeStorage run for real. Directories are a per-test-file temporary tree. iOS's
 * moveItemAtPath refuses an existing target; the shim does too when Platform.OS is "ios",
 * so the storage's iOS replace path is the one exercised.
 */
import * as fs from "node:fs/promises";
import { mkdtempSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const fsRoot = mkdtempSync(join(tmpdir(), "modelsync-rnfs-"));
export const DOCUMENTS = join(fsRoot, "Documents");
/** The app bundle (iOS MainBundlePath) and Android assets: the test puts models here. */
export const BUNDLE = join(fsRoot, "App.app");
export const ASSETS = join(fsRoot, "assets");
for (const d of [DOCUMENTS, BUNDLE, ASSETS, join(fsRoot, "Caches"), join(fsRoot, "tmp")]) mkdirSync(d, { recursive: true });

const REGULAR = "NSFileTypeRegular";
const DIRECTORY = "NSFileTypeDirectory";

async function exists(path: string): Promise<boolean> {
  return fs.stat(path).then(
    () => true,
    () => false,
  );
}

function platformOS(): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require("react-native") as typeof import("react-native")).Platform.OS;
}

export function fsModule(): Record<string, unknown> {
  return {
    getConstants: () => ({
      CachesDirectoryPath: join(fsRoot, "Caches"),
      DocumentDirectoryPath: DOCUMENTS,
      DownloadDirectoryPath: join(fsRoot, "Downloads"),
      ExternalCachesDirectoryPath: join(fsRoot, "Caches"),
      ExternalDirectoryPath: join(fsRoot, "External"),
      ExternalStorageDirectoryPath: join(fsRoot, "External"),
      MainBundlePath: BUNDLE,
      TemporaryDirectoryPath: join(fsRoot, "tmp"),
      FileTypeRegular: REGULAR,
      FileTypeDirectory: DIRECTORY,
      DocumentDirectory: 0,
    }),
    exists,
    mkdir: (path: string) => fs.mkdir(path, { recursive: true }).then(() => undefined),
    readFile: async (path: string) => (await fs.readFile(path)).toString("base64"),
    writeFile: (path: string, b64: string) => fs.writeFile(path, Buffer.from(b64, "base64")),
    appendFile: (path: string, b64: string) => fs.appendFile(path, Buffer.from(b64, "base64")),
    moveFile: async (from: string, into: string) => {
      if (platformOS() === "ios" && (await exists(into))) throw new Error(`“${into}” already exists (NSFileWriteFileExistsError)`);
      await fs.rename(from, into);
    },
    copyFile: async (from: string, into: string) => {
      if (platformOS() === "ios" && (await exists(into))) throw new Error(`“${into}” already exists (NSFileWriteFileExistsError)`);
      await fs.copyFile(from, into);
    },
    copyFileAssets: (from: string, into: string) => fs.copyFile(join(ASSETS, from), into),
    unlink: async (path: string) => {
      if (!(await exists(path))) throw new Error(`File does not exist: ${path}`);
      await fs.rm(path, { recursive: true });
    },
    stat: async (path: string) => {
      const s = await fs.stat(path);
      return {
        ctime: s.ctimeMs / 1000,
        mtime: s.mtimeMs / 1000,
        size: s.size,
        type: s.isDirectory() ? DIRECTORY : REGULAR,
        mode: s.mode,
        originalFilepath: path,
      };
    },
    readDir: async (path: string) => {
      const out = [];
      for (const name of await fs.readdir(path)) {
        const s = await fs.stat(join(path, name));
        out.push({
          ctime: s.ctimeMs / 1000,
          mtime: s.mtimeMs / 1000,
          name,
          path: join(path, name),
          size: s.size,
          type: s.isDirectory() ? DIRECTORY : REGULAR,
        });
      }
      return out;
    },
  };
}
