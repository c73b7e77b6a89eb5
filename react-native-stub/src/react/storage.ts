/**
 * Storage on @dr.pogodin/react-native-fs (the maintained fork of react-native-fs, new
 * architecture ready). Bytes cross the bridge as base64 (@scure/base).
 *
 * Atomic replace: Android's moveFile is File.renameTo, one rename(2) that replaces the
 * target. iOS's is NSFileManager moveItemAtPath, which refuses an existing target, so a
 * write there is: write `X.new` whole, unlink X (the commit point), move `X.new` to X. A
 * crash between the last two leaves only `X.new`, whole, and read() finishes the move; a
 * crash before the unlink leaves both, and the uncommitted `X.new` is dropped. The FS
 * package has no fsync: the OS's own ordering is what we get on a phone.
 */
import * as RNFS from "@dr.pogodin/react-native-fs";
import { base64 } from "@scure/base";
import { Platform } from "react-native";

import { StoreError } from "../core/errors";
import type { Storage } from "../core/ports";

const NEW = ".new";

function parent(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "" : path.slice(0, i);
}

export class ReactNativeStorage implements Storage {
  /** `root` defaults to <DocumentDirectoryPath>/modelsync: kept across app updates, not
   * user-visible, and backed up on iOS (exclude it if the models are large). */
  constructor(readonly root: string = `${RNFS.DocumentDirectoryPath}/modelsync`) {}

  localPath(path: string): string {
    if (path.split("/").includes("..")) throw new StoreError(`path ${JSON.stringify(path)} escapes the state directory`);
    return path === "" ? this.root : `${this.root}/${path}`;
  }

  private async guard<T>(what: string, path: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof StoreError) throw err;
      throw new StoreError(`${what} ${path}: ${(err as Error).message}`);
    }
  }

  private async ensureDir(path: string): Promise<void> {
    const dir = parent(this.localPath(path));
    if (dir !== "" && !(await RNFS.exists(dir))) await RNFS.mkdir(dir);
  }

  /** Finish or drop an interrupted iOS replace (see the file comment). */
  private async recover(full: string): Promise<void> {
    if (!(await RNFS.exists(full + NEW))) return;
    if (await RNFS.exists(full)) await RNFS.unlink(full + NEW);
    else await RNFS.moveFile(full + NEW, full);
  }

  read(path: string): Promise<Uint8Array | null> {
    return this.guard("read", path, async () => {
      const full = this.localPath(path);
      await this.recover(full);
      if (!(await RNFS.exists(full))) return null;
      return base64.decode(await RNFS.readFile(full, "base64"));
    });
  }

  writeAtomic(path: string, data: Uint8Array): Promise<void> {
    return this.guard("write", path, async () => {
      await this.ensureDir(path);
      const full = this.localPath(path);
      await RNFS.writeFile(full + NEW, base64.encode(data), "base64");
      if (Platform.OS === "ios" && (await RNFS.exists(full))) await RNFS.unlink(full);
      await RNFS.moveFile(full + NEW, full);
    });
  }

  append(path: string, data: Uint8Array): Promise<void> {
    return this.guard("append", path, async () => {
      await this.ensureDir(path);
      await RNFS.appendFile(this.localPath(path), base64.encode(data), "base64");
    });
  }

  size(path: string): Promise<number | null> {
    return this.guard("stat", path, async () => {
      const full = this.localPath(path);
      await this.recover(full);
      if (!(await RNFS.exists(full))) return null;
      return Number((await RNFS.stat(full)).size);
    });
  }

  list(dir: string): Promise<string[]> {
    return this.guard("list", dir, async () => {
      const full = this.localPath(dir);
      if (!(await RNFS.exists(full))) return [];
      const names = (await RNFS.readdir(full)).filter((n) => !n.endsWith(NEW));
      return names.sort();
    });
  }

  remove(path: string): Promise<void> {
    return this.guard("remove", path, async () => {
      const full = this.localPath(path);
      if (await RNFS.exists(full)) await RNFS.unlink(full); // unlink removes directories recursively
      if (await RNFS.exists(full + NEW)) await RNFS.unlink(full + NEW);
    });
  }

  rename(from: string, to: string): Promise<void> {
    return this.guard("rename", from, async () => {
      await this.ensureDir(to);
      const dest = this.localPath(to);
      if (Platform.OS === "ios" && (await RNFS.exists(dest))) await RNFS.unlink(dest);
      await RNFS.moveFile(this.localPath(from), dest);
    });
  }

  /** Copy a model shipped in the app out to a writable path once, so onnxruntime can load
   * it on iOS standalone builds (microsoft/onnxruntime#26738). `asset` is a path relative to
   * the Android assets folder or the iOS main bundle. Returns the absolute path. */
  async embeddedModel(asset: string, name: string): Promise<string> {
    const dest = this.localPath(`embedded/${name}`);
    return this.guard("copy", asset, async () => {
      if (await RNFS.exists(dest)) return dest;
      await this.ensureDir(`embedded/${name}`);
      if (Platform.OS === "android") await RNFS.copyFileAssets(asset, dest + NEW);
      else await RNFS.copyFile(`${RNFS.MainBundlePath ?? ""}/${asset}`, dest + NEW);
      await RNFS.moveFile(dest + NEW, dest);
      return dest;
    });
  }
}
