/**
 * The public API described as OpenAPI 3.1, made from the zod schemas the code itself uses (the job from
 * shared/job.ts in {@linkcode publicJob}'s shape, the error body from shared/errors.ts, the conversion options from
 * shared/options.ts) with `z.toJSONSchema` (JSON Schema 2020-12, the dialect of OpenAPI 3.1). Each route is one
 * entry of {@linkcode OPERATIONS}; {@linkcode openApiDocument} builds the document from them, and
 * {@linkcode mountOpenApi} serves it at `/openapi.json` with a reference page at `/docs`.
 */
import { z } from "zod";
import type { Env, Hono } from "hono";
import {
  ConversionOptions,
  DEFAULT_LOUDNESS,
  ERROR_STATUS,
  ErrorBody,
  type ErrorCode,
  Job,
  JobOutput,
  JobStatus,
  MP3_BITRATES,
  MP3_SAMPLE_RATES,
  OPTION_NAMES,
} from "@vmp3/shared";

/** A JSON Schema (2020-12) or OpenAPI object, as plain JSON. */
export type Json = Record<string, unknown>;

/**
 * The job as the public API shows it: the shape {@linkcode publicJob} (shared/job.ts) gives, with the links the
 * Gateway adds.
 */
export const PublicJob = Job.omit({ cacheKey: true, owner: true, output: true }).extend({
  output: JobOutput.omit({ key: true }).optional(),
  /** Where to find the job, follow it, and (once done, where signed links are on) download its MP3 without a key. */
  links: z.object({
    self: z.string(),
    events: z.string(),
    /** A short-lived signed link to the MP3 (`?expires=&sig=`), usable without an API key. */
    download: z.string().optional(),
  }),
});

/** One page of jobs, newest first: `next` is the cursor of the next page, null on the last. */
export const JobList = z.object({ jobs: z.array(PublicJob), next: z.string().nullable() });

/** The files uploaded in one request, one job each. */
export const Batch = z.object({
  id: z.uuid(),
  jobs: z.array(PublicJob),
  /** Files that did not become a job (a quota reached, say), with why; absent on a batch read back. */
  errors: z.array(z.object({ filename: z.string(), error: ErrorBody.shape.error })).optional(),
  createdAt: z.iso.datetime().optional(),
});

/**
 * `POST /v1/jobs` with a JSON body: import the video from a public URL. Every other key is a conversion option, by
 * name (so the object is open, and combined with the options with `allOf`).
 */
export const ImportRequest = z.looseObject({
  /** The video to fetch: a public http(s) URL (private and loopback addresses are refused). */
  url: z.url({ protocol: /^https?$/ }).max(8192),
  /** Where the job's events are POSTed, signed (Standard Webhooks). */
  webhook_url: z.url({ protocol: /^https?$/ }).max(2048).optional(),
});

/** `POST /v1/uploads/presign`: announce a file to send straight to the object store (and its options, by name). */
export const PresignRequest = z.looseObject({
  filename: z.string().min(1).max(1024),
  /** The exact size of the file, in bytes. */
  size: z.number().int().positive(),
  content_type: z.string().max(255).optional(),
  webhook_url: z.url({ protocol: /^https?$/ }).max(2048).optional(),
});

/** Where to send the bytes of a direct upload: one URL to PUT the whole file to, or one per part. */
export const PresignedUpload = z.object({
  id: z.uuid(),
  /** A single PUT of the whole file. */
  url: z.url().optional(),
  /** Multipart: the size of every part but the last, in bytes. */
  partSize: z.number().int().positive().optional(),
  /** Multipart: PUT part `number` to `url`, and keep the ETag it answers for the completion. */
  parts: z.array(z.object({ number: z.number().int().positive(), url: z.url() })).optional(),
  /** When the URLs and the upload expire. */
  expiresAt: z.iso.datetime(),
});

/** `POST /v1/uploads/{id}/complete`: the ETags of the parts sent (multipart uploads only). */
export const CompleteUpload = z.object({
  parts: z.array(z.object({ number: z.number().int().positive(), etag: z.string() })).optional(),
});

/** The answer of `GET /healthz`. */
export const Health = z.object({ ok: z.literal(true) });

/** The zod schemas given a name in `components.schemas`; they are referenced by `$ref` wherever used. */
const NAMED = new Map<z.ZodType, string>([
  [PublicJob, "Job"],
  [JobList, "JobList"],
  [Batch, "Batch"],
  [ErrorBody, "ErrorBody"],
  [ConversionOptions, "ConversionOptions"],
  [ImportRequest, "ImportRequest"],
  [PresignRequest, "PresignRequest"],
  [PresignedUpload, "PresignedUpload"],
  [CompleteUpload, "CompleteUpload"],
  [Health, "Health"],
]);

/** A `$ref` to a component. */
export function ref(name: string, kind = "schemas"): Json {
  return { $ref: `#/components/${kind}/${name}` };
}

// ---------------------------------------------------------------------------------------------------------------
// Conversion options

/** Seconds as a clock: "1:30", "00:01:30.250" (what `parseTime` in shared/options.ts reads). */
const CLOCK = { type: "string", pattern: "^(?:(?:\\d+:)?\\d{1,2}:)?\\d+(?:\\.\\d+)?$" };

/**
 * What each option means, and the limits its zod schema checks in refinements (which JSON Schema cannot carry):
 * the value sets come from shared/options.ts. Typed by option name, so a new option does not type-check until it
 * is described here.
 */
const OPTION_DOCS: Record<keyof ConversionOptions, { description: string; schema?: (zod: Json) => Json }> = {
  bitrate: {
    description: 'Constant bitrate of the MP3, kbit/s ("128k" works too). Not with `quality`. Default: auto.',
    schema: () => ({ type: "integer", enum: [...MP3_BITRATES] }),
  },
  quality: {
    description: 'Variable bitrate: LAME quality, 0 (best, ~245 kbit/s) to 9 (~65 kbit/s); "V2" works too.',
    schema: () => ({ type: "integer", minimum: 0, maximum: 9 }),
  },
  sample_rate: {
    description: "Sample rate of the MP3, Hz. Default: the source's (96 kHz becomes 48 kHz).",
    schema: () => ({ type: "integer", enum: [...MP3_SAMPLE_RATES] }),
  },
  channels: {
    description: "1 (mono) or 2 (stereo). Default: the source's; 5.1 and 7.1 are downmixed to stereo.",
    schema: () => ({ type: "integer", enum: [1, 2] }),
  },
  start: {
    description: 'Where the MP3 starts in the source: seconds ("90.5") or a time ("1:30").',
    schema: (zod) => ({ anyOf: [zod, CLOCK] }),
  },
  end: {
    description: "Where the MP3 ends in the source (later than `start`; not with `duration`).",
    schema: (zod) => ({ anyOf: [zod, CLOCK] }),
  },
  duration: {
    description: "How long the MP3 lasts (not with `end`).",
    schema: (zod) => ({ anyOf: [{ ...zod, exclusiveMinimum: 0 }, CLOCK] }),
  },
  audio_track: {
    description: "Which audio stream: its index among the audio streams (0 is the first) or an ISO 639-2 " +
      "language (`fra`). Default: the source's default audio stream.",
    schema: () => ({
      anyOf: [{ type: "integer", minimum: 0, maximum: 1000 }, { type: "string", pattern: "^[A-Za-z]{3}$" }],
    }),
  },
  normalize: {
    description:
      `EBU R128 loudness normalisation (two passes), to \`loudness\` (default ${DEFAULT_LOUDNESS} LUFS).`,
  },
  loudness: {
    description: "The loudness to normalise to, LUFS; giving it turns `normalize` on.",
    schema: () => ({ type: "number", minimum: -70, maximum: -5 }),
  },
  title: { description: "Title tag (ID3). Default: the source's." },
  artist: { description: "Artist tag. Default: the source's." },
  album: { description: "Album tag. Default: the source's." },
  genre: { description: "Genre tag, as text." },
  comment: { description: "Comment tag, as text." },
  year: {
    description: "Year tag. Default: the source's date.",
    schema: () => ({ type: "integer", minimum: 0, maximum: 9999 }),
  },
  track: { description: 'Track number, "3" or "3/12".' },
  id3v2_version: {
    description: "ID3v2 version of the tags: 3 (read by every player, Windows Explorer too) or 4.",
    schema: () => ({ type: "integer", enum: [3, 4] }),
  },
  cover: {
    description:
      '"auto" (the source\'s own picture, if it has one), "none", or seconds into the video for a frame.',
    schema: (zod) => ({ anyOf: [...(zod.anyOf as Json[]), CLOCK] }),
  },
};

/** The options object as JSON Schema: zod's view of `ConversionOptions` (its input), with the docs above. */
function optionsSchema(): Json {
  const zod = tidy(z.toJSONSchema(ConversionOptions, { target: "draft-2020-12", io: "input" }) as Json);
  const properties: Record<string, Json> = {};
  for (const [name, schema] of Object.entries(zod.properties as Record<string, Json>)) {
    const docs = OPTION_DOCS[name as keyof ConversionOptions];
    if (!docs) throw new Error(`Option ${name} has no description in gateway/openapi.ts`);
    properties[name] = { ...(docs.schema ? docs.schema(schema) : schema), description: docs.description };
  }
  return {
    type: "object",
    description: "Conversion options; all optional. A bad value is 400 invalid_option naming the field. " +
      "Give either `bitrate` or `quality`, and either `end` or `duration`.",
    properties,
  };
}

/** The component name of the query parameter of option `name`. */
function optionParameter(name: string): string {
  return `option_${name}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Errors

/** When each error code is answered (the Description of the route's error responses). */
const ERROR_DOCS: Record<ErrorCode, string> = {
  invalid_request: "A malformed body, part or header.",
  invalid_option: "An option out of range, or one the file cannot honour; the message names it.",
  url_not_allowed: "A URL that vmp3 will not reach (a private or loopback address).",
  unauthorized: "No API key, or one that is not valid.",
  forbidden: "The key may not do this.",
  not_found: "No such resource, or not one of this key's.",
  request_timeout: "The upload stalled or trickled; nothing was kept.",
  not_ready: "The job is not done (or failed): there is no MP3 yet.",
  conflict: "The request conflicts with the resource's state (a tus offset that is not the upload's, a job " +
    "that did not fail).",
  idempotency_key_reused: "The Idempotency-Key was used before with a different request.",
  expired: "The files were removed when the job (or upload) expired.",
  payload_too_large: "The upload is larger than the server takes; nothing was kept.",
  unsupported_media_type: "A body that is not a video, audio, octet-stream or the expected type.",
  precondition_failed: "A Tus-Resumable version this server does not speak.",
  url_fetch_failed: "The URL to import from answered with an error, or could not be reached.",
  rate_limited: "Too many requests for the key's rate limit; see Retry-After.",
  quota_exceeded: "The key's quota (bytes a day, jobs at once) is used up.",
  not_implemented: "Not available in this deployment.",
  no_audio_stream: "The video has no audio.",
  unsupported_input: "Not media, or a container that is refused (a playlist, a concat list).",
  corrupt_input: "A known container that cannot be read.",
  input_too_long: "Longer than the server converts.",
  too_many_streams: "More streams than the server reads.",
  conversion_failed: "The conversion failed.",
  internal: "Something went wrong on the server.",
  upstream_unavailable: "A service behind the Gateway answered something unexpected.",
  service_unavailable: "A service behind the Gateway cannot be reached; nothing was accepted.",
  still_converting: "The job was accepted and is still converting; follow it at Location.",
};

/** The codes a job can fail with, which `POST /v1/convert` answers as its own error. */
const JOB_FAILURES: ErrorCode[] = [
  "no_audio_stream",
  "unsupported_input",
  "corrupt_input",
  "input_too_long",
  "too_many_streams",
  "invalid_option",
  "conversion_failed",
];

/** What the upload of a video can be refused with. */
const UPLOAD_ERRORS: ErrorCode[] = [
  "invalid_request",
  "invalid_option",
  "payload_too_large",
  "request_timeout",
  "unsupported_media_type",
  "unsupported_input",
  "quota_exceeded",
  "idempotency_key_reused",
  "service_unavailable",
];

// ---------------------------------------------------------------------------------------------------------------
// Operations

/** An HTTP method, as OpenAPI names it. */
export type Method = "get" | "post" | "put" | "patch" | "delete" | "head" | "options";

/** A schema given as zod (named ones become `$ref`s) or as plain JSON Schema. */
export type SchemaSource = z.ZodType | Json;

/** A path, query or header parameter. */
export interface ParameterSpec {
  name: string;
  in: "path" | "query" | "header";
  description: string;
  required?: boolean;
  schema: SchemaSource;
}

/** One media type of a body. */
export interface ContentSpec {
  schema?: SchemaSource;
  /** Said on the schema (a Media Type Object has no description). */
  description?: string;
}

/** One response of an operation (errors are described by {@linkcode OperationSpec.errors} instead). */
export interface ResponseSpec {
  description: string;
  headers?: Record<string, { description: string; schema?: Json; required?: boolean }>;
  content?: Record<string, ContentSpec>;
}

/** One route of the public API. */
export interface OperationSpec {
  method: Method;
  /** The path in OpenAPI form: `/v1/jobs/{id}`. */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tag: "Jobs" | "Uploads" | "Batches" | "Service";
  /** Who may call: API key holders, anyone, or a key holder or anyone with a signed link. */
  auth: "key" | "none" | "key-or-link";
  parameters?: ParameterSpec[];
  /** Whether the conversion options are taken as query parameters. */
  options?: boolean;
  requestBody?: { required: boolean; description?: string; content: Record<string, ContentSpec> };
  responses: Record<string, ResponseSpec>;
  /** The error codes the route answers with; each becomes (part of) the response of its status. */
  errors: ErrorCode[];
}

const ID_PARAMETER: ParameterSpec = {
  name: "id",
  in: "path",
  required: true,
  description: "The job's id.",
  schema: { type: "string", format: "uuid" },
};
const UPLOAD_ID: ParameterSpec = { ...ID_PARAMETER, description: "The upload's id." };
const BATCH_ID: ParameterSpec = { ...ID_PARAMETER, description: "The batch's id." };

const IDEMPOTENCY_KEY: ParameterSpec = {
  name: "Idempotency-Key",
  in: "header",
  description:
    "A unique string (a UUID, say): a request repeated with the same key (within 24 hours) answers " +
    "the job the first made (Idempotent-Replayed: true) and creates nothing new; the same key with a different " +
    "request (bytes or URL, options, webhook_url) is 422 idempotency_key_reused; a repeat while the first is " +
    "still in progress is 409 conflict; once that job is deleted, the key makes a new one.",
  schema: { type: "string", minLength: 1, maxLength: 255 },
};

const TUS_RESUMABLE: ParameterSpec = {
  name: "Tus-Resumable",
  in: "header",
  required: true,
  description: "The tus protocol version: 1.0.0.",
  schema: { type: "string", const: "1.0.0" },
};

const header = (description: string, schema: Json = { type: "string" }) => ({ description, schema });
const LOCATION = header("The URL meant: the new resource, or where to go.", {
  type: "string",
  format: "uri-reference",
});
const TUS_HEADERS = { "Tus-Resumable": header("1.0.0") };

/** The bodies a video can be uploaded as, to `POST /v1/jobs` and `POST /v1/convert`. */
const UPLOAD_BODY: Record<string, ContentSpec> = {
  "multipart/form-data": {
    schema: {
      allOf: [ref("ConversionOptions"), {
        type: "object",
        required: ["file"],
        properties: {
          file: {
            type: "string",
            format: "binary",
            contentMediaType: "application/octet-stream",
            description: "The video (or audio) file, with its name. Several `file` parts make a batch.",
          },
          webhook_url: { type: "string", format: "uri", description: "Where the job's events are POSTed." },
        },
      }],
    },
  },
  "video/*": { schema: { type: "string", format: "binary", contentMediaType: "video/*" } },
  "audio/*": { schema: { type: "string", format: "binary", contentMediaType: "audio/*" } },
  "application/octet-stream": { schema: { type: "string", format: "binary" } },
};

/** The bodies of `POST /v1/jobs`: an upload, or JSON naming a URL to import from. */
const VIDEO_OR_URL_BODY: Record<string, ContentSpec> = {
  ...UPLOAD_BODY,
  "application/json": {
    description: "Import from a URL: the server fetches the video itself.",
    schema: { allOf: [ref("ImportRequest"), ref("ConversionOptions")] },
  },
};

const VIDEO_PARAMETERS: ParameterSpec[] = [
  {
    name: "filename",
    in: "query",
    description: "The file's name, for a raw body (else its Content-Disposition's).",
    schema: { type: "string" },
  },
  {
    name: "Content-Disposition",
    in: "header",
    description: 'The file\'s name, for a raw body: `attachment; filename="clip.mp4"`.',
    schema: { type: "string" },
  },
  IDEMPOTENCY_KEY,
];

const MP3_HEADERS = {
  "Content-Disposition": header(
    "`attachment`, with the original name as `<name>.mp3` (UTF-8 in `filename*`).",
  ),
};

/** Every route of the public API. */
export const OPERATIONS: OperationSpec[] = [
  {
    method: "post",
    path: "/v1/jobs",
    operationId: "createJob",
    tag: "Jobs",
    summary: "Convert a video: upload it (or name its URL), get a job",
    description:
      "Answers 202 once the video is stored and its conversion queued. The body is a form with a " +
      "`file` part, a raw `video/*`, `audio/*` or `application/octet-stream` body named by `?filename=` or " +
      "Content-Disposition, or JSON `{url, webhook_url, <option>…}` to import from a public URL. Options come as " +
      "query parameters or form fields. A job whose bytes and options equal an earlier one's is done at once " +
      "(`cached: true`).",
    auth: "key",
    options: true,
    parameters: VIDEO_PARAMETERS,
    requestBody: { required: true, content: VIDEO_OR_URL_BODY },
    responses: {
      "202": {
        description: "Accepted: the job.",
        headers: {
          Location: LOCATION,
          "Idempotent-Replayed": header(
            "`true` when this answers an earlier request with the same Idempotency-Key.",
          ),
        },
        content: { "application/json": { schema: PublicJob } },
      },
    },
    errors: [...UPLOAD_ERRORS, "url_not_allowed", "url_fetch_failed", "not_implemented"],
  },
  {
    method: "post",
    path: "/v1/convert",
    operationId: "convert",
    tag: "Jobs",
    summary: "Convert a video and wait for the MP3",
    description:
      "The same uploads as `POST /v1/jobs` (a form or a raw body; not a URL import); waits for the " +
      "job (up to 30 minutes) and answers the MP3 itself, or the job's error with its status.",
    auth: "key",
    options: true,
    parameters: VIDEO_PARAMETERS,
    requestBody: { required: true, content: UPLOAD_BODY },
    responses: {
      "200": {
        description: "The MP3.",
        headers: { ...MP3_HEADERS, "x-job-id": header("The job's id.") },
        content: {
          "audio/mpeg": { schema: { type: "string", format: "binary", contentMediaType: "audio/mpeg" } },
        },
      },
    },
    errors: [...UPLOAD_ERRORS, ...JOB_FAILURES, "still_converting"],
  },
  {
    method: "get",
    path: "/v1/jobs",
    operationId: "listJobs",
    tag: "Jobs",
    summary: "List the key's jobs, newest first",
    auth: "key",
    parameters: [
      { name: "status", in: "query", description: "Only jobs in this status.", schema: JobStatus },
      {
        name: "cursor",
        in: "query",
        description: "The `next` of the page before; absent for the first page.",
        schema: { type: "string" },
      },
      {
        name: "limit",
        in: "query",
        description: "At most this many jobs.",
        schema: { type: "integer", minimum: 1, maximum: 100 },
      },
    ],
    responses: {
      "200": { description: "One page of jobs.", content: { "application/json": { schema: JobList } } },
    },
    errors: ["invalid_request", "service_unavailable"],
  },
  {
    method: "get",
    path: "/v1/jobs/{id}",
    operationId: "getJob",
    tag: "Jobs",
    summary: "A job: its status, progress, and once done its MP3's facts",
    auth: "key",
    parameters: [ID_PARAMETER],
    responses: { "200": { description: "The job.", content: { "application/json": { schema: PublicJob } } } },
    errors: ["not_found", "service_unavailable"],
  },
  {
    method: "delete",
    path: "/v1/jobs/{id}",
    operationId: "deleteJob",
    tag: "Jobs",
    summary: "Cancel an unfinished job, or delete a finished one and its files",
    auth: "key",
    parameters: [ID_PARAMETER],
    responses: {
      "200": {
        description: "An unfinished job, cancelled: its conversion stopped and its files removed.",
        content: { "application/json": { schema: PublicJob } },
      },
      "204": { description: "A finished job, deleted with its files." },
    },
    errors: ["not_found", "service_unavailable"],
  },
  {
    method: "post",
    path: "/v1/jobs/{id}/retry",
    operationId: "retryJob",
    tag: "Jobs",
    summary: "Queue a failed job again",
    auth: "key",
    parameters: [ID_PARAMETER],
    responses: {
      "202": {
        description: "Queued again.",
        headers: { Location: LOCATION },
        content: { "application/json": { schema: PublicJob } },
      },
    },
    errors: ["not_found", "conflict", "expired", "quota_exceeded", "service_unavailable"],
  },
  {
    method: "get",
    path: "/v1/jobs/{id}/events",
    operationId: "jobEvents",
    tag: "Jobs",
    summary: "Follow a job as Server-Sent Events",
    description:
      "An `event: job` with the job's JSON at each change, each with an `id:`; the stream ends after " +
      "`done`, `failed` or `cancelled`. Reconnect with Last-Event-ID to get only what came after.",
    auth: "key",
    parameters: [ID_PARAMETER, {
      name: "Last-Event-ID",
      in: "header",
      description: "The `id:` of the last event received, to resume after it (EventSource sends it).",
      schema: { type: "string" },
    }, {
      name: "lastEventId",
      in: "query",
      description: "The same as Last-Event-ID, for clients that cannot set headers.",
      schema: { type: "string" },
    }],
    responses: {
      "200": {
        description: "The event stream.",
        headers: { "Cache-Control": header("no-cache") },
        content: { "text/event-stream": { schema: { type: "string" } } },
      },
    },
    errors: ["not_found", "service_unavailable"],
  },
  {
    method: "get",
    path: "/v1/jobs/{id}/download",
    operationId: "downloadJob",
    tag: "Jobs",
    summary: "The MP3 of a done job",
    description:
      "A redirect to a short-lived link to the object store, or the bytes themselves (embedded mode). " +
      "Works without an API key when `expires` and `sig` are those of a signed download link.",
    auth: "key-or-link",
    parameters: [
      ID_PARAMETER,
      {
        name: "expires",
        in: "query",
        description: "Signed link: when it expires (Unix seconds).",
        schema: { type: "string", pattern: "^\\d{1,12}$" },
      },
      { name: "sig", in: "query", description: "Signed link: its signature.", schema: { type: "string" } },
    ],
    responses: {
      "200": {
        description: "The MP3 (embedded mode).",
        headers: MP3_HEADERS,
        content: {
          "audio/mpeg": { schema: { type: "string", format: "binary", contentMediaType: "audio/mpeg" } },
        },
      },
      "302": { description: "A redirect to a short-lived link to the MP3.", headers: { Location: LOCATION } },
    },
    errors: ["not_found", "not_ready", "expired", "service_unavailable"],
  },
  {
    method: "post",
    path: "/v1/batches",
    operationId: "createBatch",
    tag: "Batches",
    summary: "Convert several videos: one form, a `file` part each (up to 20), one job each",
    description:
      "The same options for every file, as query parameters or form fields. Answers 202 with the batch once " +
      "every file is stored; a file refused on its own (a quota reached) is listed in `errors`, the others go on.",
    auth: "key",
    options: true,
    requestBody: {
      required: true,
      content: {
        "multipart/form-data": {
          schema: {
            type: "object",
            properties: { file: { type: "array", items: { type: "string", format: "binary" } } },
            required: ["file"],
          },
        },
      },
    },
    responses: {
      "202": {
        description: "Accepted: the batch and its jobs.",
        headers: { Location: LOCATION },
        content: { "application/json": { schema: Batch } },
      },
    },
    errors: [...UPLOAD_ERRORS],
  },
  {
    method: "get",
    path: "/v1/batches/{id}",
    operationId: "getBatch",
    tag: "Batches",
    summary: "A batch: the jobs of the files uploaded in one request",
    auth: "key",
    parameters: [BATCH_ID],
    responses: { "200": { description: "The batch.", content: { "application/json": { schema: Batch } } } },
    errors: ["not_found", "service_unavailable"],
  },
  {
    method: "get",
    path: "/v1/batches/{id}/download",
    operationId: "downloadBatch",
    tag: "Batches",
    summary: "The MP3s of a batch's done jobs, as one ZIP file",
    description:
      "Streamed as it is made (STORE method, ZIP64 where needed, UTF-8 names, a name taken twice " +
      'gets " (2)").',
    auth: "key",
    parameters: [BATCH_ID],
    responses: {
      "200": {
        description: "The ZIP.",
        headers: { "Content-Disposition": header("`attachment`, named after the batch.") },
        content: { "application/zip": { schema: { type: "string", format: "binary" } } },
      },
    },
    errors: ["not_found", "not_ready", "expired", "service_unavailable"],
  },
  {
    method: "options",
    path: "/v1/uploads",
    operationId: "tusOptions",
    tag: "Uploads",
    summary: "tus: what this server supports",
    auth: "key",
    responses: {
      "204": {
        description: "The tus versions, extensions and largest upload.",
        headers: {
          ...TUS_HEADERS,
          "Tus-Version": header("1.0.0"),
          "Tus-Extension": header("The extensions: creation, termination, expiration."),
          "Tus-Max-Size": header("The largest upload, in bytes.", { type: "integer" }),
        },
      },
    },
    errors: [],
  },
  {
    method: "post",
    path: "/v1/uploads",
    operationId: "tusCreate",
    tag: "Uploads",
    summary: "tus: start a resumable upload",
    description:
      "Upload-Metadata carries `filename`, `webhook_url` and the conversion options by name, each " +
      "value base64: they are checked now, so a bad option never costs an upload. When the last byte is in " +
      "(PATCH), the job is created.",
    auth: "key",
    parameters: [
      TUS_RESUMABLE,
      {
        name: "Upload-Length",
        in: "header",
        required: true,
        description: "The size of the file, in bytes.",
        schema: { type: "integer", minimum: 1 },
      },
      {
        name: "Upload-Metadata",
        in: "header",
        description: "`key base64value` pairs, comma-separated: filename, webhook_url, options.",
        schema: { type: "string" },
      },
      IDEMPOTENCY_KEY,
    ],
    responses: { "201": { description: "Created.", headers: { ...TUS_HEADERS, Location: LOCATION } } },
    errors: [
      "invalid_request",
      "invalid_option",
      "precondition_failed",
      "payload_too_large",
      "quota_exceeded",
      "service_unavailable",
    ],
  },
  {
    method: "head",
    path: "/v1/uploads/{id}",
    operationId: "tusOffset",
    tag: "Uploads",
    summary: "tus: how many bytes are in",
    auth: "key",
    parameters: [UPLOAD_ID, TUS_RESUMABLE],
    responses: {
      "200": {
        description: "The offset to resume at.",
        headers: {
          ...TUS_HEADERS,
          "Upload-Offset": header("Bytes received.", { type: "integer" }),
          "Upload-Length": header("The size of the file.", { type: "integer" }),
          "Upload-Metadata": header("As given at creation."),
          "Cache-Control": header("no-store"),
        },
      },
    },
    errors: ["not_found", "expired", "precondition_failed", "service_unavailable"],
  },
  {
    method: "patch",
    path: "/v1/uploads/{id}",
    operationId: "tusPatch",
    tag: "Uploads",
    summary: "tus: send bytes from an offset",
    auth: "key",
    parameters: [UPLOAD_ID, TUS_RESUMABLE, {
      name: "Upload-Offset",
      in: "header",
      required: true,
      description: "Where these bytes go: the offset HEAD answered.",
      schema: { type: "integer", minimum: 0 },
    }],
    requestBody: {
      required: true,
      content: { "application/offset+octet-stream": { schema: { type: "string", format: "binary" } } },
    },
    responses: {
      "204": {
        description: "Stored. After the last byte, the job is created.",
        headers: { ...TUS_HEADERS, "Upload-Offset": header("The new offset.", { type: "integer" }) },
      },
    },
    errors: [
      "invalid_request",
      "not_found",
      "conflict",
      "expired",
      "precondition_failed",
      "payload_too_large",
      "request_timeout",
      "unsupported_media_type",
      "unsupported_input",
      "service_unavailable",
    ],
  },
  {
    method: "delete",
    path: "/v1/uploads/{id}",
    operationId: "tusTerminate",
    tag: "Uploads",
    summary: "tus: abandon an upload and remove its bytes",
    auth: "key",
    parameters: [UPLOAD_ID, TUS_RESUMABLE],
    responses: { "204": { description: "Removed.", headers: TUS_HEADERS } },
    errors: ["not_found", "precondition_failed", "service_unavailable"],
  },
  {
    method: "post",
    path: "/v1/uploads/presign",
    operationId: "presignUpload",
    tag: "Uploads",
    summary: "Direct upload: get URLs to send the file straight to the object store",
    description:
      "PUT the file (or each part) to the URLs answered, then call `POST /v1/uploads/{id}/complete`. " +
      "Options and webhook_url are checked now.",
    auth: "key",
    parameters: [IDEMPOTENCY_KEY],
    requestBody: {
      required: true,
      content: {
        "application/json": { schema: { allOf: [ref("PresignRequest"), ref("ConversionOptions")] } },
      },
    },
    responses: {
      "201": {
        description: "Where to send the bytes.",
        content: { "application/json": { schema: PresignedUpload } },
      },
    },
    errors: [
      "invalid_request",
      "invalid_option",
      "payload_too_large",
      "quota_exceeded",
      "not_implemented",
      "service_unavailable",
    ],
  },
  {
    method: "post",
    path: "/v1/uploads/{id}/complete",
    operationId: "completeUpload",
    tag: "Uploads",
    summary: "Direct upload: the bytes are sent; create the job",
    auth: "key",
    parameters: [UPLOAD_ID],
    requestBody: { required: false, content: { "application/json": { schema: CompleteUpload } } },
    responses: {
      "202": {
        description: "Accepted, as `POST /v1/jobs`.",
        headers: { Location: LOCATION },
        content: { "application/json": { schema: PublicJob } },
      },
    },
    errors: [
      "invalid_request",
      "not_found",
      "conflict",
      "expired",
      "payload_too_large",
      "unsupported_input",
      "service_unavailable",
    ],
  },
  {
    method: "get",
    path: "/openapi.json",
    operationId: "openApi",
    tag: "Service",
    summary: "This document",
    auth: "none",
    responses: {
      "200": { description: "OpenAPI 3.1.", content: { "application/json": { schema: { type: "object" } } } },
    },
    errors: [],
  },
  {
    method: "get",
    path: "/docs",
    operationId: "docs",
    tag: "Service",
    summary: "This document as a web page (loads its renderer from a CDN)",
    auth: "none",
    responses: {
      "200": { description: "An HTML page.", content: { "text/html": { schema: { type: "string" } } } },
    },
    errors: [],
  },
  {
    method: "get",
    path: "/healthz",
    operationId: "health",
    tag: "Service",
    summary: "Whether the Gateway is up",
    auth: "none",
    responses: { "200": { description: "Up.", content: { "application/json": { schema: Health } } } },
    errors: [],
  },
];

// ---------------------------------------------------------------------------------------------------------------
// The document

/** The OpenAPI document, as JSON. */
export type OpenApiDocument = Json & { openapi: string; paths: Record<string, Record<string, Json>> };

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/**
 * Removes what zod adds that says nothing here: `$schema` and `$id` (a component is not a document), the
 * ±2^53 bounds of every integer, and the regular expressions behind `format: uuid` and `format: date-time`.
 */
function tidy(schema: Json): Json {
  const walk = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(walk);
    if (!node || typeof node !== "object") return node;
    const out: Json = {};
    for (const [key, value] of Object.entries(node)) {
      if (key === "$schema" || key === "$id") continue;
      if ((key === "minimum" || key === "maximum") && Math.abs(value as number) === MAX_SAFE) continue;
      if (key === "pattern" && typeof (node as Json).format === "string") continue;
      out[key] = walk(value);
    }
    return out;
  };
  return walk(schema) as Json;
}

/** The components.schemas: every named zod schema, converted once, referring to the others by `$ref`. */
function componentSchemas(): Record<string, Json> {
  const registry = z.registry<{ id: string }>();
  for (const [schema, id] of NAMED) registry.add(schema, { id });
  const options = optionsSchema();
  const { schemas } = z.toJSONSchema(registry, {
    target: "draft-2020-12",
    unrepresentable: "any",
    uri: (id) => `#/components/schemas/${id}`,
    override(ctx) {
      // The validated options are a transform of themselves (zod cannot say what comes out): show what goes in.
      if (ctx.zodSchema === (ConversionOptions as unknown)) {
        for (const key of Object.keys(ctx.jsonSchema)) delete (ctx.jsonSchema as Json)[key];
        Object.assign(ctx.jsonSchema, options);
      }
    },
  });
  const out: Record<string, Json> = {};
  for (const [id, schema] of Object.entries(schemas)) out[id] = tidy(schema as Json);
  return out;
}

function schemaOf(source: SchemaSource): Json {
  if (!(source instanceof z.ZodType)) return source;
  const name = NAMED.get(source);
  if (name) return ref(name);
  return tidy(
    z.toJSONSchema(source, { target: "draft-2020-12", io: "input", unrepresentable: "any" }) as Json,
  );
}

function contentOf(content: Record<string, ContentSpec>): Json {
  const out: Json = {};
  for (const [type, spec] of Object.entries(content)) {
    // A Media Type Object has no description of its own: it goes on the schema.
    const schema = spec.schema ? schemaOf(spec.schema) : {};
    out[type] = spec.schema || spec.description
      ? { schema: spec.description ? { ...schema, description: spec.description } : schema }
      : {};
  }
  return out;
}

/** The error responses of an operation: one per status, listing its codes, each with an example. */
function errorResponses(operation: OperationSpec): Record<string, Json> {
  const codes = new Set<ErrorCode>(operation.errors);
  if (operation.auth !== "none") {
    codes.add("unauthorized");
    codes.add("rate_limited");
  }
  codes.add("internal");
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of codes) {
    byStatus.set(ERROR_STATUS[code], [...(byStatus.get(ERROR_STATUS[code]) ?? []), code]);
  }
  const out: Record<string, Json> = {};
  for (const [status, list] of [...byStatus].sort(([a], [b]) => a - b)) {
    const headers: Json = {};
    if (list.includes("rate_limited") || list.includes("quota_exceeded")) {
      headers["Retry-After"] = header("Seconds to wait.", { type: "integer" });
    }
    if (list.includes("unauthorized")) headers["WWW-Authenticate"] = header('Bearer realm="vmp3"');
    if (list.includes("still_converting")) headers.Location = LOCATION;
    const description = list.map((code) => `\`${code}\`: ${ERROR_DOCS[code]}`).join(" ");
    out[String(status)] = {
      description,
      ...(Object.keys(headers).length ? { headers } : {}),
      // A HEAD answer has no body.
      ...(operation.method === "head" ? {} : {
        content: {
          "application/json": {
            schema: ref("ErrorBody"),
            examples: Object.fromEntries(
              list.map((code) => [code, { value: { error: { code, message: ERROR_DOCS[code] } } }]),
            ),
          },
        },
      }),
    };
  }
  return out;
}

function operationOf(operation: OperationSpec): Json {
  const parameters: Json[] = (operation.parameters ?? []).map((p) => ({
    name: p.name,
    in: p.in,
    description: p.description,
    ...(p.required ? { required: true } : {}),
    schema: schemaOf(p.schema),
  }));
  if (operation.options) {
    for (const name of OPTION_NAMES) parameters.push(ref(optionParameter(name), "parameters"));
  }
  const security = operation.auth === "key"
    ? undefined // the document's default
    : operation.auth === "none"
    ? []
    : [{ apiKey: [] }, {}];
  const responses: Json = {};
  for (const [status, response] of Object.entries(operation.responses)) {
    responses[status] = {
      description: response.description,
      ...(response.headers ? { headers: response.headers } : {}),
      ...(response.content ? { content: contentOf(response.content) } : {}),
    };
  }
  Object.assign(responses, errorResponses(operation));
  return {
    operationId: operation.operationId,
    summary: operation.summary,
    ...(operation.description ? { description: operation.description } : {}),
    tags: [operation.tag],
    ...(security ? { security } : {}),
    ...(parameters.length ? { parameters } : {}),
    ...(operation.requestBody
      ? {
        requestBody: {
          required: operation.requestBody.required,
          ...(operation.requestBody.description ? { description: operation.requestBody.description } : {}),
          content: contentOf(operation.requestBody.content),
        },
      }
      : {}),
    responses,
  };
}

/** Builds the OpenAPI 3.1 document of `operations` (default: every route, {@linkcode OPERATIONS}). */
export function buildOpenApiDocument(operations: OperationSpec[] = OPERATIONS): OpenApiDocument {
  const schemas = componentSchemas();
  const options = (schemas.ConversionOptions.properties ?? {}) as Record<string, Json>;
  const parameters: Record<string, Json> = {};
  for (const name of OPTION_NAMES) {
    const { description, ...schema } = options[name];
    parameters[optionParameter(name)] = { name, in: "query", description, schema };
  }
  const paths: Record<string, Record<string, Json>> = {};
  for (const operation of operations) {
    const item = paths[operation.path] ??= {};
    if (item[operation.method]) throw new Error(`${operation.method} ${operation.path} is described twice`);
    item[operation.method] = operationOf(operation);
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "vmp3",
      version: "1.0.0",
      summary: "Upload a video, get an MP3.",
      description: 'Every error is `{"error":{"code","message"}}` with the code\'s status. Calls need an ' +
        "API key (`Authorization: Bearer vmp3_…`) unless the server runs open (embedded dev mode); answers to " +
        "a key carry RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset headers.",
    },
    tags: [
      { name: "Jobs", description: "Conversions: create, follow, download, cancel, retry." },
      { name: "Uploads", description: "Resumable (tus 1.0) and direct-to-storage uploads." },
      { name: "Batches", description: "Several files uploaded in one request." },
      { name: "Service", description: "Health and this description." },
    ],
    security: [{ apiKey: [] }],
    paths,
    components: {
      schemas,
      parameters,
      securitySchemes: {
        apiKey: {
          type: "http",
          scheme: "bearer",
          bearerFormat: "vmp3_<key id>_<secret>",
          description: "An API key, sent as `Authorization: Bearer <key>`.",
        },
      },
    },
  };
}

let built: OpenApiDocument | undefined;

/** The OpenAPI document of the public API (built once). */
export function openApiDocument(): OpenApiDocument {
  return built ??= buildOpenApiDocument();
}

/** The pinned renderer of `/docs` (Scalar), loaded from a CDN with its Subresource Integrity hash. */
export const DOCS_SCRIPT = {
  src: "https://cdn.jsdelivr.net/npm/@scalar/api-reference@1.76.0/dist/browser/standalone.js",
  integrity: "sha384-oH1C0RwqcwbVXkC+r8A+4qRoyEUQdtxAzOwumkxZtQBBcsy61FOoPt7B50OVJYYQ",
};

/** The `/docs` page: the document rendered in the browser by {@linkcode DOCS_SCRIPT} (so it needs the CDN). */
export const DOCS_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vmp3 API</title>
</head>
<body>
<noscript>This page renders <a href="./openapi.json">openapi.json</a> with a script from a CDN.</noscript>
<script id="api-reference" data-url="./openapi.json"></script>
<script src="${DOCS_SCRIPT.src}" integrity="${DOCS_SCRIPT.integrity}" crossorigin="anonymous"></script>
</body>
</html>
`;

/** Serves `GET /openapi.json` (the document) and `GET /docs` (a page that renders it) on `app`. */
export function mountOpenApi<E extends Env>(app: Hono<E>): void {
  app.get("/openapi.json", (c) => c.json(openApiDocument(), 200, { "cache-control": "public, max-age=300" }));
  app.get("/docs", (c) => c.html(DOCS_HTML, 200, { "cache-control": "public, max-age=300" }));
}
