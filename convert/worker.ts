/**
 * The Convert worker: takes a conversion task, probes the video and runs FFmpeg on it where it lies in storage (a
 * presigned URL read with range requests, or the store's own file; a small video, or any after a passing read
 * failure, is first fetched into a private work folder), stores the MP3 under the job's deterministic key, and
 * reports to Metadata. A task is acked only after the
 * MP3 is stored and the final event is confirmed by the broker; a redelivered task whose MP3 is stored already
 * reports that MP3 rather than making it again. A job cancelled while its task is in hand is stopped (FFmpeg
 * killed), its MP3 removed, and its task acked; a task whose job was cancelled before it arrived is skipped.
 */
import {
  AppError,
  type BlobStore,
  type Broadcast,
  type ConversionRequested,
  type ConvertLimitsEnv,
  INPUT_ERROR_CODES,
  type JobCancel,
  type JobEvent,
  type Outcome,
  type Queue,
  sha256Tap,
  type Subscription,
} from "@vmp3/shared";
import { measureAudioBitrate } from "./audio_bitrate.ts";
import { type ConversionPlan, planConversion, streamToMeasure } from "./plan.ts";
import { readMp3Info } from "./mp3_info.ts";
import { probeInput, type ProbeResult } from "./probe.ts";
import { isUrl } from "./source.ts";
import { transcode } from "./transcode.ts";
import type { ToolLimits } from "./ffmpeg_check.ts";

/** Tools and limits of one worker. */
export interface ConvertLimits {
  ffmpegPath: string;
  ffprobePath: string;
  /** The longest accepted input, in seconds. */
  maxDuration: number;
  /** The most streams an input may have. */
  maxStreams: number;
  /** Wall-clock cap of one FFmpeg run, in ms. */
  timeoutMs: number;
  /** The rlimits of each ffmpeg/ffprobe run (default: the launcher's, DEFAULT_TOOL_LIMITS). */
  toolLimits?: Partial<ToolLimits>;
}

/** The limits that `config` sets. */
export function limitsFromEnv(config: ConvertLimitsEnv): ConvertLimits {
  return {
    ffmpegPath: config.FFMPEG_PATH,
    ffprobePath: config.FFPROBE_PATH,
    maxDuration: config.MAX_DURATION_SECONDS,
    maxStreams: config.MAX_STREAMS,
    timeoutMs: config.FFMPEG_TIMEOUT_SECONDS * 1000,
    toolLimits: {
      memoryBytes: config.FFMPEG_MAX_MEMORY_MB * 1024 * 1024,
      fileBytes: config.FFMPEG_MAX_FILE_MB * 1024 * 1024,
      openFiles: config.FFMPEG_MAX_OPEN_FILES,
    },
  };
}

/** What a worker needs. */
export interface WorkerDeps {
  blobs: BlobStore;
  events: Queue<JobEvent>;
  /** The only folder the worker writes to; one subfolder per task, removed after. */
  workDir: string;
  limits: ConvertLimits;
  /** Least time between two progress events of a job, in ms. */
  progressEveryMs?: number;
  /**
   * Waits before trying a task again after a passing failure (storage or broker). The task stays in hand
   * meanwhile, so a short outage does not use up its delivery limit, and a try goes on from the step that failed
   * (an MP3 already made is not made again); after the last wait the job fails with service_unavailable.
   */
  retryDelaysMs?: number[];
  /**
   * The longest one task may be held, in ms: the broker takes back a delivery held past its consumer timeout and
   * delivers it again, so the same conversion would run twice. No retry wait ends past it, and FFmpeg's cap is cut
   * to fit in it. Unlimited by default.
   */
  maxHoldMs?: number;
  /**
   * The smallest video read over HTTP where it lies (default {@linkcode READ_IN_PLACE_FROM_BYTES}); a smaller one
   * is fetched into the work folder. A store's own file is always read in place.
   */
  readInPlaceFromBytes?: number;
  /** Told, one line each, what happens to each task: received, retried, done, handed back. */
  log?: (line: string) => void;
  /** Called once a task's job.started event is confirmed, before FFmpeg runs. */
  onStarted?: (task: ConversionRequested) => void | Promise<void>;
  now?: () => Date;
}

/** How the caller steers one run of the task handler. */
export interface TaskControl {
  /**
   * Aborting it stops the task at once (FFmpeg is killed, a retry wait is cut short) and hands it back: the
   * handler then resolves "retry" without reporting anything, so the broker gives the task to another worker.
   */
  signal?: AbortSignal;
  /** Written by the handler while FFmpeg runs: its estimate of the seconds left. */
  eta?: number;
  /**
   * Set, then `signal` aborted, when the task's job was cancelled: the handler stops, removes the job's MP3 if it
   * was stored, reports nothing (Metadata has the job as cancelled already) and resolves "ack", never "retry".
   */
  cancelled?: boolean;
}

/**
 * Below this a video is fetched whole rather than read over HTTP as FFmpeg goes (8 MiB): fetching it takes ~30 ms
 * here, and the tools' range requests cost the store more than one GET (bench/throughput.ts, docs/benchmarks.md).
 */
export const READ_IN_PLACE_FROM_BYTES = 8 * 1024 * 1024;

/** About five minutes of tries. */
export const RETRY_DELAYS_MS = [1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 60_000, 60_000, 60_000];

/**
 * Failures that trying again cannot mend: the input's, options the input cannot honour (a missing track, a
 * cover time past the end), and FFmpeg's own (a crash or its time cap).
 */
function isFinal(error: unknown): error is AppError {
  return error instanceof AppError &&
    (INPUT_ERROR_CODES.includes(error.code) || error.code === "invalid_option" ||
      error.code === "conversion_failed");
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** A made MP3's figures, as ffprobe gives them (any may be missing where it does not say). */
interface OutputFigures {
  duration?: number;
  bitrate?: number;
  sampleRate?: number;
  channels?: number;
}

/** The figures of an MP3 from ffprobe's description of it. */
function figuresOf(probe: ProbeResult): OutputFigures {
  const audio = probe.audio[0];
  return {
    duration: probe.duration,
    bitrate: audio?.bitrate,
    sampleRate: audio?.sampleRate,
    channels: audio?.channels,
  };
}

/** What one delivery of a task has done so far: a try after a passing failure goes on from there. */
interface Steps {
  /** Where the input is read: a URL or file of the store, or the copy in the work folder. */
  source?: string;
  /** Read the input from a copy in the work folder from now on: reading it where it lies failed once. */
  staged?: boolean;
  probe?: ProbeResult;
  plan?: ConversionPlan;
  started?: boolean;
  /** The MP3 is made, and these are its figures. */
  result?: OutputFigures;
  stored?: { size: number; sha256: string };
  /** The MP3 was already stored by an earlier delivery, and is reported as it is. */
  reused?: boolean;
  /** Each step's wall time, "name N ms", in order: told in the task's last log line. */
  timeline?: string[];
}

/** The wall-clock cap of the probe of an input (probeInput's default). */
const PROBE_TIMEOUT_MS = 30_000;

/** Where a try keeps its copy of the input, when it reads one. */
function inputPathIn(dir: string): string {
  return `${dir}/input`;
}

/** Creates the function that handles one task and says what to do with its message. */
export function createTaskHandler(
  deps: WorkerDeps,
): (task: ConversionRequested, control?: TaskControl) => Promise<Outcome> {
  const { blobs, events, workDir, limits, progressEveryMs = 500, now = () => new Date() } = deps;
  const retryDelaysMs = deps.retryDelaysMs ?? RETRY_DELAYS_MS;
  const maxHoldMs = deps.maxHoldMs ?? Infinity;
  const readInPlaceFromBytes = deps.readInPlaceFromBytes ?? READ_IN_PLACE_FROM_BYTES;
  const log = deps.log ?? (() => {});
  const at = () => now().toISOString();
  const fail = (jobId: string, code: string, message: string) =>
    events.publish({ type: "job.failed", version: 1, jobId, at: at(), error: { code, message } });

  return async (task, control = {}) => {
    const received = Date.now();
    const outcome = await run(task, control, received);
    if (!control.cancelled) return outcome;
    // Cancelled, whatever happened meanwhile: a job.done already sent is ignored by Metadata (the job is final, as
    // cancelled), so nothing will ever point at this job's MP3.
    await removeOutput(task);
    log(`job ${task.jobId}: cancelled; stopped and dropped after ${Date.now() - received} ms`);
    return "ack";
  };

  /**
   * A task whose video is no longer in storage. A delivery removes the video only after its job.done was
   * confirmed, so with the MP3 stored, an earlier delivery finished the job and only its ack was lost (the
   * broker's connection broke): nothing is reported, for a job.failed now would be a second final word, and
   * (from another Metadata process, or redelivered) could be applied before that job.done. Otherwise the job
   * fails, once: that cannot pass.
   */
  async function inputGone(task: ConversionRequested): Promise<string> {
    if (await blobs.head(task.outputKey)) {
      return "already done by an earlier delivery (video removed, MP3 stored)";
    }
    await fail(task.jobId, "internal", "The uploaded video is no longer in storage");
    return "failed (input gone)";
  }

  /** Removes the MP3 of a cancelled job; a failure only leaves an unused object behind, so it is logged. */
  async function removeOutput(task: ConversionRequested): Promise<void> {
    try {
      await blobs.delete(task.outputKey);
    } catch (error) {
      console.error(
        `Job ${task.jobId} was cancelled, but its MP3 ${task.outputKey} could not be removed:`,
        error,
      );
    }
  }

  /** Handles one task; "retry" when `control.signal` stopped it. */
  async function run(task: ConversionRequested, control: TaskControl, received: number): Promise<Outcome> {
    const { signal } = control;
    const deadline = received + maxHoldMs;
    const dir = `${workDir}/${task.jobId}-${crypto.randomUUID().slice(0, 8)}`;
    const steps: Steps = {};
    try {
      for (let attempt = 0;; attempt++) {
        try {
          await Deno.mkdir(dir, { recursive: true });
          const outcome = await convert(task, dir, steps, control, deadline);
          log(`job ${task.jobId}: ${outcome} in ${Date.now() - received} ms (${steps.timeline?.join(", ")})`);
          return "ack";
        } catch (error) {
          if (signal?.aborted || control.cancelled) {
            if (!control.cancelled) {
              log(
                `job ${task.jobId}: stopped and handed back to the broker after ${Date.now() - received} ms`,
              );
            }
            return "retry";
          }
          if (
            isFinal(error) && error.code !== "conversion_failed" && !steps.staged && !steps.result &&
            steps.source !== undefined && steps.source !== inputPathIn(dir)
          ) {
            // Read where it lies, the video looked damaged or unfit. A storage read that broke can look so
            // (ffprobe says only "moov atom not found" when its seek to the end fails): the verdict is given on
            // a fetched copy, at once. FFmpeg's own failures (a crash, its time cap) are not run twice.
            log(
              `job ${task.jobId}: ${error.code} reading the video in place; trying again on a fetched copy`,
            );
            steps.source = undefined;
            steps.staged = true;
            attempt--;
            continue;
          }
          const delay = retryDelaysMs[attempt];
          try {
            if (isFinal(error)) {
              await fail(task.jobId, error.code, error.message);
              log(`job ${task.jobId}: failed (${error.code}) in ${Date.now() - received} ms`);
              return "ack";
            }
            if (delay === undefined || Date.now() + delay > deadline) {
              console.error(`Job ${task.jobId} failed after ${attempt + 1} tries; giving up:`, error);
              await fail(
                task.jobId,
                "service_unavailable",
                "Storage or the queue stayed unreachable; please try again",
              );
              log(`job ${task.jobId}: failed (service_unavailable) in ${Date.now() - received} ms`);
              return "ack";
            }
          } catch (publishError) {
            // Not even the failure could be reported: hand the task back to the broker.
            console.error(
              `Job ${task.jobId}: could not report its failure; the task goes back:`,
              publishError,
            );
            return "retry";
          }
          console.error(`Job ${task.jobId} failed (try ${attempt + 1}); trying again in ${delay} ms:`, error);
          if (steps.source && steps.source !== inputPathIn(dir) && !steps.result) {
            // Reading the video where it lies may be what failed: the next try fetches a copy (steps done stay).
            steps.source = undefined;
            steps.staged = true;
          }
          await pause(delay, signal);
          if (signal?.aborted || control.cancelled) {
            if (!control.cancelled) log(`job ${task.jobId}: handed back to the broker during a retry wait`);
            return "retry";
          }
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }

  /** One try at a task, from the first step not done yet; throws what went wrong. */
  async function convert(
    task: ConversionRequested,
    dir: string,
    steps: Steps,
    control: TaskControl,
    deadline: number,
  ): Promise<string> {
    const { jobId } = task;
    const { signal } = control;
    const inputPath = inputPathIn(dir);
    const outputPath = `${dir}/output.mp3`;
    const timeline = steps.timeline ??= [];
    let last = Date.now();
    /** Notes the wall time since the last step as `name`'s. */
    const mark = (name: string) => {
      const now = Date.now();
      timeline.push(`${name} ${now - last} ms`);
      last = now;
    };
    if (!steps.source && blobs.readLocation && !steps.staged) {
      // FFmpeg reads the video where it lies and starts at once, instead of after a whole download. The URL must
      // outlive the probe and every FFmpeg run of the job; a read that fails anyway is a passing failure, and the
      // next try works on a local copy.
      // The probe, the bitrate measure and the conversion's runs (which share one timeoutMs), with room.
      const lifetime = Math.min(deadline - Date.now(), PROBE_TIMEOUT_MS + 2 * limits.timeoutMs) / 1000 + 60;
      const found = await blobs.readLocation(task.inputKey, { expiresIn: lifetime });
      if (!found) return await inputGone(task);
      // A small video over HTTP is fetched whole instead: one GET costs the store less than the tools' several
      // range requests, and takes a few ms.
      if (!isUrl(found.location) || found.size >= readInPlaceFromBytes) steps.source = found.location;
      mark("locate");
    }
    if (!steps.source) {
      const object = await blobs.get(task.inputKey);
      if (!object) return await inputGone(task);
      const file = await Deno.open(inputPath, { write: true, create: true, truncate: true });
      await object.body.pipeTo(file.writable, { signal });
      steps.source = inputPath;
      mark("download");
    }
    const source = steps.source;
    // Whether an earlier delivery stored the MP3 already: asked now, while the input is probed, read below.
    const storedLookup = steps.result ? Promise.resolve(null) : blobs.head(task.outputKey);
    storedLookup.catch(() => {}); // a failure counts where it is read, not as unhandled if a step fails first
    if (!steps.probe || !steps.plan) {
      let probe = await probeInput(source, {
        name: task.filename,
        ffprobePath: limits.ffprobePath,
        limits: limits.toolLimits,
        maxDuration: limits.maxDuration,
        maxStreams: limits.maxStreams,
        signal,
      });
      mark("probe");
      // "auto" keeps the MP3 at or below the source's bitrate: where the container does not state it, measure it.
      const unknown = streamToMeasure(probe, task.options);
      if (unknown) {
        const bitrate = await measureAudioBitrate(source, unknown.index, {
          ffmpegPath: limits.ffmpegPath,
          limits: limits.toolLimits,
          deadline: Math.min(deadline, Date.now() + limits.timeoutMs),
          signal,
        });
        if (bitrate) {
          probe = {
            ...probe,
            audio: probe.audio.map((a) => a.index === unknown.index ? { ...a, bitrate } : a),
          };
        }
        mark("measure bitrate");
      }
      steps.probe = probe;
      steps.plan = planConversion(probe, task.options);
    }
    const { probe, plan } = steps;
    if (!steps.started) {
      // The input's duration (a trim's length is the output's, not the input's).
      await events.publish({ type: "job.started", version: 1, jobId, at: at(), duration: probe.duration });
      steps.started = true;
      mark("started event");
      await deps.onStarted?.(task);
    }

    const storedBefore = !steps.result && await storedLookup;
    if (!steps.result) mark("look for a stored MP3");
    if (storedBefore) {
      // An earlier delivery of this task stored the MP3 (its worker died before the ack). Cached jobs may share
      // that MP3 already, with its size and sha256: it is reported as it is, never made again over it.
      const tap = sha256Tap();
      const existing = await blobs.get(task.outputKey);
      if (existing) {
        const file = await Deno.open(outputPath, { write: true, create: true, truncate: true });
        await existing.body.pipeThrough(tap.stream).pipeTo(file.writable, { signal });
        steps.stored = { size: existing.size, sha256: tap.digest() };
        steps.result = figuresOf(
          await probeInput(outputPath, {
            ffprobePath: limits.ffprobePath,
            limits: limits.toolLimits,
            maxDuration: Number.MAX_SAFE_INTEGER,
            maxStreams: 2,
            signal,
          }),
        );
        steps.reused = true;
      }
      mark("reuse stored MP3");
    }
    if (!steps.result) {
      signal?.throwIfAborted();
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("No time is left to convert within the broker's consumer timeout");
      let reported = 0;
      let lastSent = 0;
      let sending = Promise.resolve();
      await transcode(source, outputPath, {
        plan,
        workDir: dir,
        name: task.filename,
        ffmpegPath: limits.ffmpegPath,
        limits: limits.toolLimits,
        maxDuration: limits.maxDuration,
        timeoutMs: Math.min(limits.timeoutMs, left),
        signal,
        onProgress({ fraction, speed, eta }) {
          control.eta = eta;
          const progress = Math.min(0.99, Math.round(fraction * 1000) / 1000);
          if (progress <= reported || Date.now() - lastSent < progressEveryMs) return;
          reported = progress;
          lastSent = Date.now();
          const detail = {
            ...(speed === undefined ? {} : { speed: Math.round(speed * 100) / 100 }),
            ...(eta === undefined ? {} : { eta: Math.round(eta * 10) / 10 }),
          };
          sending = sending.then(() =>
            events.publish({ type: "job.progress", version: 1, jobId, at: at(), progress, ...detail })
          ).catch((error) => console.error(`Progress of job ${jobId} was not reported:`, error));
        },
      });
      control.eta = 0;
      await sending;
      mark("transcode");
      // Read from the MP3's own Xing/Info header, as ffprobe would (mp3_info.ts); ffprobe where it has none.
      steps.result = await readMp3Info(outputPath) ?? figuresOf(
        await probeInput(outputPath, {
          ffprobePath: limits.ffprobePath,
          limits: limits.toolLimits,
          maxDuration: Number.MAX_SAFE_INTEGER,
          maxStreams: 2, // the audio, and the cover picture if there is one
          signal,
        }),
      );
      mark("read the MP3's figures");
    }
    const result = steps.result;

    if (!steps.stored) {
      signal?.throwIfAborted();
      // Hashed on its way into storage: the MP3 is read once per try.
      const tap = sha256Tap();
      const output = await Deno.open(outputPath, { read: true });
      // Its length is known: one PutObject whatever the size (up to S3's 5 GiB), never a multipart upload.
      const { size } = await blobs.put(task.outputKey, output.readable.pipeThrough(tap.stream), {
        contentType: "audio/mpeg",
        size: (await output.stat()).size,
      });
      steps.stored = { size, sha256: tap.digest() };
      mark("store");
    }
    // The MP3 may have been stored after a cancel: stop before reporting it (the caller then removes it).
    if (control.cancelled) throw new Error(`Job ${jobId} was cancelled`);
    const { size, sha256 } = steps.stored;
    // An MP3 from ffmpeg always states its duration (its Xing header); 0 would mean the file is empty.
    const duration = result.duration ?? 0;
    await events.publish({
      type: "job.done",
      version: 1,
      jobId,
      at: at(),
      output: {
        key: task.outputKey,
        codec: "mp3",
        size,
        duration,
        bitrate: audioBitrate(result.bitrate, size, duration),
        ...(plan.encoder?.mode === "vbr" ? { quality: plan.encoder.quality } : {}),
        // 0 is ffprobe's "unknown": the plan's figures then.
        sampleRate: result.sampleRate || plan.sampleRate,
        channels: result.channels || plan.channels,
        sha256,
        method: plan.method,
      },
    });
    mark("done event");
    // The video is not needed once its MP3 is made (a retry is for failed jobs only): it goes now, not at expiry.
    await blobs.delete(task.inputKey).catch((error) =>
      deps.log?.(`job ${jobId}: could not remove its video (the sweeper will, at expiry): ${error}`)
    );
    mark("remove video");
    return steps.reused ? "done (its MP3 was already stored)" : "done";
  }
}

/** The MP3's average bitrate in bit/s: as ffprobe read it, else from the file's size (which includes the tags). */
function audioBitrate(probed: number | undefined, size: number, duration: number): number {
  if (probed) return Math.round(probed);
  return duration > 0 ? Math.round((size * 8) / duration) : 0;
}

/** A running worker. */
export interface Worker extends Subscription {
  /**
   * Stops taking tasks and lets each task in hand finish if it can within `graceMs`: a task whose conversion
   * will not end in time by FFmpeg's own estimate, or that is still running when the time is up, is stopped (FFmpeg
   * killed) and handed back to the broker for another worker. Resolves once every task in hand is settled.
   * `close()` is `shutdown(Infinity)`: it waits for every task to finish.
   */
  shutdown(graceMs: number): Promise<void>;
}

/** How long a worker remembers a cancelled job, to skip its task if that comes after the cancel: 10 minutes. */
export const REMEMBER_CANCELS_MS = 10 * 60_000;
/** The most cancelled jobs remembered at once; past it the oldest are forgotten first. */
const MAX_REMEMBERED_CANCELS = 100_000;

/** Seconds kept, past FFmpeg's estimate, for storing the MP3 and reporting it when deciding what can finish. */
const FINISH_RESERVE_SECONDS = 1;

/** What {@linkcode startWorker} needs besides a task handler's. */
export interface WorkerOptions extends WorkerDeps {
  /** How many conversions run at once (default 1). */
  concurrency?: number;
  /**
   * The cancels of jobs, heard by every worker: the task in hand of a cancelled job is stopped and dropped (see
   * {@linkcode TaskControl.cancelled}), and a task that arrives after its job's cancel is acked unopened.
   */
  cancels?: Broadcast<JobCancel>;
  /** How long a cancel is remembered for a task that has not arrived yet, in ms (default 10 minutes). */
  rememberCancelsMs?: number;
}

/** Consumes `tasks`, running at most `concurrency` conversions at once. */
export async function startWorker(tasks: Queue<ConversionRequested>, deps: WorkerOptions): Promise<Worker> {
  const handle = createTaskHandler(deps);
  const log = deps.log ?? (() => {});
  const rememberMs = deps.rememberCancelsMs ?? REMEMBER_CANCELS_MS;
  const inHand = new Set<{ jobId: string; stop: AbortController; control: TaskControl }>();
  /** Cancelled job ids and when to forget each, oldest first (a Map keeps insertion order). */
  const cancelled = new Map<string, number>();
  const forgetOld = () => {
    const now = Date.now();
    for (const [jobId, until] of cancelled) {
      if (until > now && cancelled.size <= MAX_REMEMBERED_CANCELS) break;
      cancelled.delete(jobId);
    }
  };
  let stopping = false;
  // Heard before any task is taken, so no task can slip in between.
  const cancelSubscription = await deps.cancels?.subscribe(({ jobId }) => {
    cancelled.delete(jobId);
    cancelled.set(jobId, Date.now() + rememberMs);
    forgetOld();
    for (const entry of inHand) {
      if (entry.jobId !== jobId || entry.control.cancelled) continue;
      log(`job ${jobId}: cancelled; stopping it`);
      entry.control.cancelled = true;
      entry.stop.abort(new Error(`Job ${jobId} was cancelled`));
    }
  });
  const subscription = await tasks.consume(async (task, info) => {
    log(`job ${task.jobId}: task received${info.redelivered ? " (delivered before)" : ""}`);
    forgetOld();
    if (cancelled.has(task.jobId)) {
      // An earlier delivery may have stored its MP3 before its worker died: nothing will ever use it now.
      await deps.blobs.delete(task.outputKey).catch((error) =>
        console.error(`Job ${task.jobId} was cancelled, but its MP3 could not be removed:`, error)
      );
      log(`job ${task.jobId}: cancelled before it started; skipped`);
      return "ack";
    }
    if (stopping) {
      log(`job ${task.jobId}: shutting down; handed back unopened`);
      return "retry";
    }
    const stop = new AbortController();
    const entry = { jobId: task.jobId, stop, control: { signal: stop.signal } as TaskControl };
    inHand.add(entry);
    try {
      return await handle(task, entry.control);
    } finally {
      inHand.delete(entry);
    }
  }, { prefetch: deps.concurrency ?? 1 }).catch(async (error) => {
    await cancelSubscription?.close();
    throw error;
  });

  let closing: Promise<void> | undefined;
  const shutdown = (graceMs: number) =>
    closing ??= (async () => {
      stopping = true;
      // Cancels are heard until the last task in hand is settled.
      const closed = subscription.close().finally(() => cancelSubscription?.close());
      if (!(graceMs < Infinity)) return await closed;
      const end = Date.now() + graceMs;
      const stop = (entry: { jobId: string; stop: AbortController }, why: string) => {
        if (entry.stop.signal.aborted) return;
        log(`job ${entry.jobId}: ${why}; stopping it to hand it back`);
        entry.stop.abort(new Error("The worker is shutting down"));
      };
      // What FFmpeg says will not end in time is handed back at once, not when the grace is over.
      const stopLate = () => {
        const left = (end - Date.now()) / 1000;
        for (const entry of inHand) {
          const eta = entry.control.eta;
          if (eta !== undefined && eta + FINISH_RESERVE_SECONDS > left) {
            stop(
              entry,
              `about ${Math.round(eta * 10) / 10} s of FFmpeg left, ${Math.round(left * 10) / 10} s of grace`,
            );
          }
        }
      };
      stopLate();
      const ticker = setInterval(stopLate, 200);
      const timer = setTimeout(() => {
        for (const entry of inHand) stop(entry, "the shutdown grace is over");
      }, graceMs);
      try {
        await closed;
      } finally {
        clearInterval(ticker);
        clearTimeout(timer);
      }
    })();
  return { close: () => shutdown(Infinity), shutdown };
}
