/** Storage on node:fs: atomic writes (temp file, fsync, rename, fsync of the directory). */
import { constants } from "node:fs";
import { appendFile, mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { dirname, join, resolve, sep } from "node:path";

import { StoreError } from "../core/errors";
import type { Storage } from "../core/ports";

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === "ENOENT";
}

export class NodeStorage implements Storage {
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  localPath(path: string): string {
    const full = resolve(this.root, path);
    if (full !== this.root && !full.startsWith(this.root + sep)) {
      throw new StoreError(`path ${JSON.stringify(path)} escapes the state directory`);
    }
    return full;
  }

  private async guard<T>(what: string, path: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof StoreError) throw err;
      throw new StoreError(`${what} ${path}: ${(err as Error).message}`);
    }
  }

  async read(path: string): Promise<Uint8Array | null> {
    return this.guard("read", path, async () => {
      try {
        return new Uint8Array(await readFile(this.localPath(path)));
      } catch (err) {
        if (isMissing(err)) return null;
        throw err;
      }
    });
  }

  async writeAtomic(path: string, data: Uint8Array): Promise<void> {
    const full = this.localPath(path);
    await this.guard("write", path, async () => {
      await mkdir(dirname(full), { recursive: true });
      const tmp = `${full}.tmp-${process.pid}`;
      const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o644);
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, full);
      await this.syncDir(dirname(full));
    });
  }

  private async syncDir(dir: string): Promise<void> {
    const fh = await open(dir, constants.O_RDONLY);
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  async append(path: string, data: Uint8Array): Promise<void> {
    const full = this.localPath(path);
    await this.guard("append", path, async () => {
      await mkdir(dirname(full), { recursive: true });
      await appendFile(full, data);
    });
  }

  async size(path: string): Promise<number | null> {
    return this.guard("stat", path, async () => {
      try {
        return (await stat(this.localPath(path))).size;
      } catch (err) {
        if (isMissing(err)) return null;
        throw err;
      }
    });
  }

  async list(dir: string): Promise<string[]> {
    return this.guard("list", dir, async () => {
      try {
        return (await readdir(this.localPath(dir))).sort();
      } catch (err) {
        if (isMissing(err)) return [];
        throw err;
      }
    });
  }

  async remove(path: string): Promise<void> {
    await this.guard("remove", path, () => rm(this.localPath(path), { recursive: true, force: true }));
  }

  async rename(from: string, to: string): Promise<void> {
    const dest = this.localPath(to);
    await this.guard("rename", from, async () => {
      await mkdir(dirname(dest), { recursive: true });
      await rename(this.localPath(from), dest);
      await this.syncDir(dirname(dest));
    });
  }
}

export function joinPath(...parts: string[]): string {
  return join(...parts);
}
