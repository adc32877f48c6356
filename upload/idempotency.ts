/**
 * Idempotency-Key on job creation: the same key and the same request give the same job, however often they are
 * sent; the same key with a different request is refused (422 idempotency_key_reused). The first request reserves
 * the key for its job id (in Metadata, shared by every Upload process, for a day); a repeat hashes what it was
 * sent, without storing it, and compares it with the job the key names.
 */
import { AppError, canonicalOptions, type ConversionOptions, parseOptions } from "@vmp3/shared";
import type { MetadataClient, PublicJob } from "@vmp3/metadata";

/** How long a key names its job: a day, as Stripe and the IETF draft suggest. */
export const IDEMPOTENCY_TTL_SECONDS = 86_400;

/** What makes two requests "the same": their bytes (or URL) and their options. */
export interface RequestPrint {
  /** The sha256 of the uploaded bytes, or the URL imported from. */
  content: string;
  options: ConversionOptions;
}

/** One creation request under an Idempotency-Key. */
export interface IdempotentRequest {
  /** Whether this request is the first with its key (go on and create job `id`), or a repeat of job `id`. */
  first: boolean;
  /** The job id: new for the first request, the earlier job's for a repeat. */
  id: string;
  /** After a failed first request: frees the key so that the client may send the request again. */
  release(): Promise<void>;
}

/** The Idempotency-Key header's value, checked, or undefined when the request has none. */
export function idempotencyKeyOf(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  if (!/^[\x21-\x7e]{1,255}$/.test(header)) {
    throw new AppError("invalid_request", "Idempotency-Key must be 1 to 255 visible ASCII characters");
  }
  return header;
}

/** Reserves `key` of `owner` for a new job id, or learns which job holds it. */
export async function claimKey(
  metadata: MetadataClient,
  owner: string | undefined,
  key: string,
): Promise<IdempotentRequest> {
  const name = `idempotency:${owner ?? ""}:${key}`;
  const id = crypto.randomUUID();
  const holder = await metadata.reserve(name, id, IDEMPOTENCY_TTL_SECONDS);
  return { first: holder === id, id: holder, release: () => metadata.unreserve(name, id) };
}

/**
 * The earlier job of a repeated request: returned when the request is the same, else idempotency_key_reused.
 * A first request still in progress is a conflict (409): try again shortly.
 */
export async function replay(
  metadata: MetadataClient,
  claim: IdempotentRequest,
  print: RequestPrint,
  printOf: (job: PublicJob) => string | undefined,
): Promise<PublicJob> {
  const job = await metadata.getJob(claim.id);
  if (!job) {
    throw new AppError(
      "conflict",
      "A request with this Idempotency-Key is still in progress; try again shortly",
    );
  }
  const earlier = parseOptions((job.options ?? {}) as Record<string, unknown>);
  if (printOf(job) !== print.content || canonicalOptions(earlier) !== canonicalOptions(print.options)) {
    throw new AppError(
      "idempotency_key_reused",
      "This Idempotency-Key was used for a different request; use a new key for a new job",
    );
  }
  return job;
}
