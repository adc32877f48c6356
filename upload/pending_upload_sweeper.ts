/**
 * The sweep of unfinished uploads (tus and direct): an upload past its expiry has its multipart upload aborted,
 * its temporary objects and state removed (and its finished object, if no job was made of it). A tus upload that
 * became a job only loses its receipt. Run periodically from upload/main.ts, like the reconciler.
 */
import type { BlobStore, MultipartStore } from "@vmp3/shared";
import { createPendingUploads, discardUpload } from "./pending_uploads.ts";
import { type Periodic, repeat } from "./periodic.ts";

/** What the sweep needs. */
export interface PendingUploadSweeperDeps {
  blobs: BlobStore;
  parts: MultipartStore;
  now?: () => Date;
  log?: (message: string) => void;
}

/** Creates the sweep; `runOnce` does one pass (returning the ids removed), `start` repeats it until stopped. */
export function createPendingUploadSweeper(deps: PendingUploadSweeperDeps) {
  const { blobs, parts, now = () => new Date(), log = (m: string) => console.error(`Upload sweep: ${m}`) } =
    deps;
  const pending = createPendingUploads(blobs);

  async function runOnce(): Promise<string[]> {
    const removed: string[] = [];
    for (const id of await pending.ids()) {
      try {
        const upload = await pending.get(id);
        if (!upload || Date.parse(upload.expiresAt) > now().getTime()) continue;
        await discardUpload(upload, { blobs, parts, log });
        removed.push(id);
      } catch (error) {
        log(
          `upload ${id} could not be removed (tried again next pass): ${(error as Error)?.message ?? error}`,
        );
      }
    }
    return removed;
  }

  /** Runs a pass `intervalMs` after the end of the one before, until stopped. */
  function start(intervalMs: number): Periodic {
    return repeat("Upload sweep", intervalMs, runOnce);
  }

  return { runOnce, start };
}
