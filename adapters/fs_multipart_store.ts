/**
 * @module
 * A {@linkcode MultipartStore} in a local folder, for the embedded mode: each upload is a folder of part files
 * (`{root}/multipart/{uploadId}/`), and completing joins them into `{root}/objects/{key}` (where
 * `adapters/fs_blob_store.ts` keeps objects) through a temporary name and a rename, so the object is whole or
 * absent. It cannot presign URLs: direct uploads need S3.
 */
import type { MultipartStore, StoredPart } from "@vmp3/shared";

const SAFE_KEY = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)*$/;
const UPLOAD_ID = /^[0-9a-f-]{36}$/;

/** Creates a {@linkcode MultipartStore} below `root` (the folder of the embedded mode's blob store). */
export function createFsMultipartStore(
  root: string,
  options: { minPartBytes?: number } = {},
): MultipartStore {
  const objectPath = (key: string) => {
    if (!SAFE_KEY.test(key) || key.split("/").some((part) => part === "." || part === "..")) {
      throw new Error(`Invalid storage key ${JSON.stringify(key)}`);
    }
    return `${root}/objects/${key}`;
  };
  const uploadDir = (uploadId: string) => {
    if (!UPLOAD_ID.test(uploadId)) throw new Error(`Invalid upload id ${JSON.stringify(uploadId)}`);
    return `${root}/multipart/${uploadId}`;
  };
  /** The upload's folder, after checking it exists and belongs to `key`. */
  const openUpload = async (key: string, uploadId: string) => {
    const dir = uploadDir(uploadId);
    const owner = await Deno.readTextFile(`${dir}/key`).catch((error) => {
      if (error instanceof Deno.errors.NotFound) throw new Error(`There is no multipart upload ${uploadId}`);
      throw error;
    });
    if (owner !== key) throw new Error(`Multipart upload ${uploadId} is not for "${key}"`);
    return dir;
  };
  const etagOf = async (bytes: Uint8Array) => {
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new Uint8Array(bytes)));
    return Array.from(digest.subarray(0, 16), (b) => b.toString(16).padStart(2, "0")).join("");
  };
  /** Writes `bytes` to `path` through a temporary name, so the file is whole or absent. */
  const writeWhole = async (path: string, bytes: Uint8Array) => {
    const temp = `${path}.${crypto.randomUUID()}.partial`;
    try {
      await Deno.writeFile(temp, bytes);
      await Deno.rename(temp, path);
    } catch (error) {
      await Deno.remove(temp).catch(() => {});
      throw error;
    }
  };

  const minPartBytes = options.minPartBytes ?? 5 * 1024 * 1024;
  const listParts = async (key: string, uploadId: string): Promise<StoredPart[]> => {
    const dir = await openUpload(key, uploadId);
    const parts: StoredPart[] = [];
    for await (const entry of Deno.readDir(dir)) {
      const match = /^(\d+)\.part$/.exec(entry.name);
      if (!match) continue;
      const { size } = await Deno.stat(`${dir}/${entry.name}`);
      const etag = await Deno.readTextFile(`${dir}/${match[1]}.etag`).catch(() => "");
      parts.push({ number: Number(match[1]), etag, size });
    }
    return parts.sort((a, b) => a.number - b.number);
  };

  return {
    minPartBytes,

    async create(key) {
      objectPath(key);
      const uploadId = crypto.randomUUID();
      const dir = uploadDir(uploadId);
      await Deno.mkdir(dir, { recursive: true });
      await Deno.writeTextFile(`${dir}/key`, key);
      return uploadId;
    },

    async uploadPart(key, uploadId, number, bytes) {
      if (!Number.isInteger(number) || number < 1 || number > 10_000) {
        throw new Error(`Invalid part ${number}`);
      }
      const dir = await openUpload(key, uploadId);
      const etag = await etagOf(bytes);
      await writeWhole(`${dir}/${number}.part`, bytes);
      await Deno.writeTextFile(`${dir}/${number}.etag`, etag);
      return etag;
    },

    listParts,

    async complete(key, uploadId, parts) {
      const dir = await openUpload(key, uploadId);
      const sorted = [...parts].sort((a, b) => a.number - b.number);
      const stored = new Map((await listParts(key, uploadId)).map((p) => [p.number, p]));
      sorted.forEach((part, i) => {
        const found = stored.get(part.number);
        if (!found || found.etag !== part.etag) throw new Error(`Part ${part.number} is missing or changed`);
        if (i < sorted.length - 1 && found.size < minPartBytes) {
          throw new Error(`Part ${part.number} is smaller than ${minPartBytes} bytes and not the last`);
        }
      });
      const path = objectPath(key);
      const folder = path.slice(0, path.lastIndexOf("/"));
      await Deno.mkdir(folder, { recursive: true });
      const temp = `${folder}/.${crypto.randomUUID()}.partial`;
      try {
        const out = await Deno.open(temp, { write: true, createNew: true });
        try {
          for (const part of sorted) {
            const file = await Deno.open(`${dir}/${part.number}.part`, { read: true });
            await file.readable.pipeTo(out.writable, { preventClose: true });
          }
          await out.sync(); // whole on disk before it takes the real name
        } finally {
          out.close();
        }
        await Deno.rename(temp, path);
      } catch (error) {
        await Deno.remove(temp).catch(() => {});
        throw error;
      }
      await Deno.remove(dir, { recursive: true });
    },

    async abort(key, uploadId) {
      const dir = await openUpload(key, uploadId).catch(() => null);
      if (dir) await Deno.remove(dir, { recursive: true });
    },

    presignPut() {
      return Promise.resolve(null);
    },

    presignPart() {
      return Promise.resolve(null);
    },
  };
}
