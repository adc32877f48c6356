/**
 * @module
 * What every JobStore's `list` shares: the list order (newest first by `createdAt`, ties broken by id, both
 * descending), the opaque cursor that marks a place in it, and the page-filling loop with its scan bound.
 */
import { AppError, type Job, JobId, type JobQuery } from "@vmp3/shared";

/**
 * How many index entries one `list` call examines at most. Only a status filter makes it examine more than a page:
 * the page is filled by scanning on past jobs in other states, and if this many were looked at before the page is
 * full, the page is returned short (it may even be empty) with a `next` cursor just after the last job examined.
 * So a client keeps paging, and no single request scans an owner's whole history.
 */
export const MAX_LIST_SCAN = 1000;

/** A place in the list order: a job's creation time (ms) and id. */
export interface ListPosition {
  createdAt: number;
  id: string;
}

/** The list position of `job`. */
export function positionOf(job: Job): ListPosition {
  return { createdAt: Date.parse(job.createdAt), id: job.id };
}

/** The opaque cursor for the place just after `position` (in list order). */
export function encodeCursor(position: ListPosition): string {
  return btoa(`${position.createdAt}:${position.id}`).replace(/\+/g, "-").replace(/\//g, "_").replace(
    /=+$/,
    "",
  );
}

/** The position `cursor` marks; throws AppError("invalid_request") when it is not a cursor a store handed out. */
export function decodeCursor(cursor: string): ListPosition {
  const invalid = () =>
    new AppError("invalid_request", "The cursor is not valid: pass the `next` of the page before, unchanged");
  if (!/^[A-Za-z0-9_-]{1,200}$/.test(cursor)) throw invalid();
  let text: string;
  try {
    text = atob(cursor.replace(/-/g, "+").replace(/_/g, "/"));
  } catch {
    throw invalid();
  }
  const match = /^(\d{1,15}):(.+)$/.exec(text);
  if (!match || !JobId.safeParse(match[2]).success) throw invalid();
  return { createdAt: Number(match[1]), id: match[2] };
}

/** Checks a query's limit, throwing AppError("invalid_request") unless it is a whole number from 1 to 100. */
export function checkLimit(limit: number): void {
  if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
    throw new AppError("invalid_request", `limit must be a whole number from 1 to 100, not ${limit}`);
  }
}

/** One entry of an owner's index, in list order; `job` is null where the job went away meanwhile. */
export interface IndexEntry {
  position: ListPosition;
  job: Job | null;
}

/**
 * Assembles one page from `entries`, the owner's index in list order starting just after the query's cursor.
 * Takes at most `limit + 1` matching jobs (to know whether another page follows) and reads at most
 * {@linkcode MAX_LIST_SCAN} entries (only a status filter, or jobs vanishing meanwhile, can make it read more than
 * `limit + 1`); stops reading `entries` as soon as it can answer.
 */
export async function collectPage(
  query: JobQuery,
  entries: AsyncIterable<IndexEntry>,
): Promise<{ jobs: Job[]; next: string | null }> {
  const jobs: Job[] = [];
  let scanned = 0;
  let last: ListPosition | null = null;
  for await (const entry of entries) {
    scanned++;
    last = entry.position;
    const job = entry.job;
    if (job && (query.status === undefined || job.status === query.status)) {
      if (jobs.length === query.limit) {
        // One more match than the page holds: another page follows, starting after the page's last job.
        return { jobs, next: encodeCursor(positionOf(jobs[jobs.length - 1])) };
      }
      jobs.push(job);
    }
    if (scanned >= MAX_LIST_SCAN) {
      // The scan bound: a short page, and the next one goes on from the last entry looked at.
      return { jobs, next: encodeCursor(last) };
    }
  }
  return { jobs, next: null };
}
