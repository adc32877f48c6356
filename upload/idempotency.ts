/**
 * Idempotency-Key on job creation (`POST /v1/jobs`, uploads and URL imports alike): the same key and the same
 * request give the same job, however often they are sent; the same key with a different request is refused (422
 * idempotency_key_reused). Two reservations in Metadata (shared by every Upload process) make it:
 *
 * - the key's **name** holds the id of its job (and, for a URL import, the print of its request) for a day, as
 *   Stripe and the IETF draft suggest;
 * - the key's **busy** mark is held by the one request handling the key now, for {@linkcode BUSY_SECONDS}, kept
 *   alive while it runs (a long upload), given up when it ends. A second request meanwhile is 409 conflict: try
 *   again shortly.
 *
 * A repeat compares what it was sent (hashed, never stored) with the job the key names, and answers that job.
 * When that job does not exist, and no request is busy with the key, the first request died before making it, or
 * the job was deleted since: the repeat then takes the key over and makes a new job, as if it were the first (a
 * key names a job, not a response; a deleted job is not answered from the grave).
 */
import { AppError, canonicalOptions, type ConversionOptions, parseOptions } from "@vmp3/shared";
import type { MetadataClient, PublicJob } from "@vmp3/metadata";

/** How long a key names its job: a day. */
export const IDEMPOTENCY_TTL_SECONDS = 86_400;
/** How long a key stays busy after its request was last heard of (it renews this every third of it). */
export const BUSY_SECONDS = 300;

/** What makes two requests "the same": their bytes (or URL), their options and their webhook URL. */
export interface RequestPrint {
  /** The sha256 of the uploaded bytes. */
  content: string;
  options: ConversionOptions;
  webhookUrl?: string;
}

/** One creation request under an Idempotency-Key. */
export interface IdempotentRequest {
  /** Whether this request is the first with its key (go on and create job `id`), or a repeat of job `id`. */
  first: boolean;
  /** The job id: new for the first request, the earlier job's for a repeat. */
  id: string;
  /** The print the first request recorded with the key up front (URL imports do), if any. */
  print?: string;
  /** The request failed before its job was made: frees the key so that the client may send it again. */
  release(): Promise<void>;
  /** The request is answered (its job made, or a repeat answered): the key is no longer busy. */
  end(): Promise<void>;
}

/** The Idempotency-Key header's value, checked, or undefined when the request has none. */
export function idempotencyKeyOf(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  if (!/^[\x21-\x7e]{1,255}$/.test(header)) {
    throw new AppError("invalid_request", "Idempotency-Key must be 1 to 255 visible ASCII characters");
  }
  return header;
}

/** The hex sha256 of a URL import's request: its URL, options and webhook URL. */
export async function importPrint(
  url: string,
  options: ConversionOptions,
  webhookUrl: string | undefined,
): Promise<string> {
  const text = JSON.stringify([url, canonicalOptions(options), webhookUrl ?? null]);
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

const busyInProgress = () =>
  new AppError("conflict", "A request with this Idempotency-Key is still in progress; try again shortly");

/**
 * Takes `key` of `owner` for this request (409 conflict while another request holds it), then reserves it for a
 * new job id, or learns which job holds it. `print`, when the request's print is known before its body is read
 * (a URL import), is kept with the key and compared on repeats. Call `end` (or `release`) when done.
 */
export async function claimKey(
  metadata: MetadataClient,
  owner: string | undefined,
  key: string,
  print?: string,
): Promise<IdempotentRequest> {
  const name = `idempotency:${owner ?? ""}:${key}`;
  const busyName = `idempotency-busy:${owner ?? ""}:${key}`;
  const id = crypto.randomUUID();
  if (await metadata.reserve(busyName, id, BUSY_SECONDS) !== id) throw busyInProgress();
  const heartbeat = setInterval(() => {
    metadata.reserve(busyName, id, BUSY_SECONDS).catch((e) =>
      console.error(`Could not keep the Idempotency-Key of job ${id} busy:`, e)
    );
  }, BUSY_SECONDS * 1000 / 3);
  let ended = false;
  const end = async () => {
    if (ended) return;
    ended = true;
    clearInterval(heartbeat);
    await metadata.unreserve(busyName, id).catch((e) =>
      console.error(`Could not free the Idempotency-Key of job ${id}:`, e)
    );
  };
  try {
    const value = print === undefined ? id : `${id}.${print}`;
    let holder = await metadata.reserve(name, value, IDEMPOTENCY_TTL_SECONDS);
    if (holder !== value) {
      const [heldId, heldPrint] = holder.split(".");
      if (await metadata.getJob(heldId)) {
        return { first: false, id: heldId, print: heldPrint, release: end, end };
      }
      // No job, and no request busy with the key (this one is): the job was deleted, or never made. Taken over.
      await metadata.unreserve(name, holder);
      holder = await metadata.reserve(name, value, IDEMPOTENCY_TTL_SECONDS);
      if (holder !== value) throw busyInProgress();
    }
    const release = async () => {
      await metadata.unreserve(name, value).catch((e) =>
        console.error(`Could not free the Idempotency-Key of job ${id}:`, e)
      );
      await end();
    };
    return { first: true, id, print, release, end };
  } catch (error) {
    await end();
    throw error;
  }
}

const reused = () =>
  new AppError(
    "idempotency_key_reused",
    "This Idempotency-Key was used for a different request; use a new key for a new job",
  );

/**
 * The earlier job of a repeated upload: returned when the request is the same (the same bytes, options and
 * webhook URL), else idempotency_key_reused.
 */
export async function replay(
  metadata: MetadataClient,
  claim: IdempotentRequest,
  print: RequestPrint,
): Promise<PublicJob> {
  const job = await mustGetReplayed(metadata, claim);
  const earlier = parseOptions((job.options ?? {}) as Record<string, unknown>);
  const content = (job.input as { sha256?: string } | undefined)?.sha256;
  if (
    claim.print !== undefined || content !== print.content ||
    canonicalOptions(earlier) !== canonicalOptions(print.options) ||
    (job.webhookUrl ?? undefined) !== print.webhookUrl
  ) {
    throw reused();
  }
  return job;
}

/** The earlier job of a repeated URL import: returned when its print is `print`, else idempotency_key_reused. */
export async function replayImport(
  metadata: MetadataClient,
  claim: IdempotentRequest,
  print: string,
): Promise<PublicJob> {
  if (claim.print !== print) throw reused();
  return await mustGetReplayed(metadata, claim);
}

async function mustGetReplayed(metadata: MetadataClient, claim: IdempotentRequest): Promise<PublicJob> {
  const job = await metadata.getJob(claim.id);
  // Deleted between the claim and now: as if the repeat had come a moment later (it would make a new job).
  if (!job) throw busyInProgress();
  return job;
}

/**
 * Ends `claim` when the scope that holds it ends (`await using`): given up (the key freed for a new attempt)
 * unless `answered()` was called, and no longer busy either way. No claim: nothing to do.
 */
export function holdKey(claim: IdempotentRequest | undefined): AsyncDisposable & { answered(): void } {
  let answered = false;
  return {
    answered: () => void (answered = true),
    async [Symbol.asyncDispose]() {
      if (!claim) return;
      if (!answered) await claim.release();
      await claim.end();
    },
  };
}
