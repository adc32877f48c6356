/**
 * A BlobStore in a local folder, for the embedded mode. Objects are written to a temporary file and renamed into
 * place, so an object is whole or absent; keys are checked so that none can leave the folder.
 */
import { AppError, type BlobStore } from "@vmp3/shared";

const SAFE_KEY = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)*$/;

/** The error of a body whose length is not the size it declared (the same as the S3 store's). */
function lengthMismatch(declared: number, sent: number, ended: boolean): AppError {
  return new AppError(
    "invalid_request",
    ended
      ? `The upload ended after ${sent} of the ${declared} bytes its length declared; nothing was kept`
      : `The upload is longer than the ${declared} bytes its length declared; nothing was kept`,
  );
}

/** Creates a BlobStore that keeps objects as files below `root`. */
export function createFsBlobStore(root: string): BlobStore {
  const pathOf = (key: string) => {
    if (!SAFE_KEY.test(key) || key.split("/").some((part) => part === "." || part === "..")) {
      throw new Error(`Invalid storage key ${JSON.stringify(key)}`);
    }
    return `${root}/objects/${key}`;
  };

  return {
    async put(key, body, options) {
      const declared = options?.size;
      const path = pathOf(key);
      const dir = path.slice(0, path.lastIndexOf("/"));
      await Deno.mkdir(dir, { recursive: true });
      const temp = `${dir}/.${crypto.randomUUID()}.partial`;
      let size = 0;
      try {
        const file = await Deno.open(temp, { write: true, createNew: true });
        try {
          for await (const chunk of body) {
            for (let written = 0; written < chunk.byteLength;) {
              written += await file.write(chunk.subarray(written));
            }
            size += chunk.byteLength;
            if (declared !== undefined && size > declared) throw lengthMismatch(declared, size, false);
          }
          if (declared !== undefined && size !== declared) throw lengthMismatch(declared, size, true);
          await file.sync(); // whole on disk before it takes the real name
        } finally {
          file.close();
        }
        await Deno.rename(temp, path);
      } catch (error) {
        await Deno.remove(temp).catch(() => {});
        throw error;
      }
      return { size };
    },
    async get(key) {
      try {
        const file = await Deno.open(pathOf(key), { read: true });
        try {
          const { size } = await file.stat();
          return { body: file.readable, size };
        } catch (error) {
          file.close();
          throw error;
        }
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) return null;
        throw error;
      }
    },
    async head(key) {
      try {
        const { size } = await Deno.stat(pathOf(key));
        return { size };
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) return null;
        throw error;
      }
    },
    async delete(key) {
      await Deno.remove(pathOf(key)).catch((error) => {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      });
    },
    async list(prefix) {
      const keys: string[] = [];
      async function walk(dir: string, base: string): Promise<void> {
        let entries: AsyncIterable<Deno.DirEntry>;
        try {
          entries = Deno.readDir(dir);
          for await (const entry of entries) {
            if (entry.name.endsWith(".partial")) continue;
            const key = base ? `${base}/${entry.name}` : entry.name;
            if (entry.isDirectory) await walk(`${dir}/${entry.name}`, key);
            else if (key.startsWith(prefix)) keys.push(key);
          }
        } catch (error) {
          if (!(error instanceof Deno.errors.NotFound)) throw error;
        }
      }
      await walk(`${root}/objects`, "");
      return keys.sort();
    },
    presignGet() {
      return Promise.resolve(null);
    },
    async readLocation(key) {
      // The object's own file: objects are renamed into place whole, never written over.
      const path = pathOf(key);
      try {
        return { location: await Deno.realPath(path), size: (await Deno.stat(path)).size };
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) return null;
        throw error;
      }
    },
  };
}
