/**
 * Whose jobs a request may see. The Gateway names the caller's API key in the `x-vmp3-owner` header (empty for a
 * caller without a key, where the API runs open); internal callers send no header and see every job.
 */
import type { Context } from "hono";
import { AppError, type Job, type JobStore, OWNER_HEADER } from "@vmp3/shared";

export { OWNER_HEADER };

/** The owner a request is limited to (`owner` undefined: callers without a key), or null for internal calls. */
export type OwnerScope = { owner: string | undefined } | null;

/** The scope of a request, from its `x-vmp3-owner` header. */
export function ownerScope(c: Context): OwnerScope {
  const header = c.req.header(OWNER_HEADER);
  if (header === undefined) return null;
  return { owner: header === "" ? undefined : header };
}

/** Runs a store call, turning its failure into service_unavailable (503). */
export function storeCall<T>(call: Promise<T>): Promise<T> {
  return call.catch((cause) => {
    if (cause instanceof AppError) throw cause;
    throw new AppError("service_unavailable", "The job store cannot be reached; try again shortly", {
      cause,
    });
  });
}

/** The job, if it exists and is in scope; else not_found, the same answer whether it exists or not. */
export async function mustGetScoped(store: JobStore, id: string, scope: OwnerScope): Promise<Job> {
  const job = await storeCall(store.get(id));
  if (!job || (scope && job.owner !== scope.owner)) {
    throw new AppError("not_found", `There is no job ${JSON.stringify(id)}`);
  }
  return job;
}
