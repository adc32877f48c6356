/**
 * The Convert worker: takes a conversion task, fetches the video into a private work folder, probes it, runs
 * FFmpeg, stores the MP3 under the job's deterministic key, and reports to Metadata. A task is acked only after the
 * MP3 is stored and the final event is confirmed by the broker; a redelivered task overwrites the same MP3.
 */
import {
  AppError,
  type BlobStore,
  type ConversionRequested,
  type ConvertLimitsEnv,
  INPUT_ERROR_CODES,
  type JobEvent,
  type Outcome,
  type Queue,
  sha256Tap,
  type Subscription,
} from "@vmp3/shared";
import { planConversion } from "./plan.ts";
import { probeInput } from "./probe.ts";
import { transcode } from "./transcode.ts";

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
}

/** The limits that `config` sets. */
export function limitsFromEnv(config: ConvertLimitsEnv): ConvertLimits {
  return {
    ffmpegPath: config.FFMPEG_PATH,
    ffprobePath: config.FFPROBE_PATH,
    maxDuration: config.MAX_DURATION_SECONDS,
    maxStreams: config.MAX_STREAMS,
    timeoutMs: config.FFMPEG_TIMEOUT_SECONDS * 1000,
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
   * meanwhile, so a short outage does not use up its delivery limit; after the last wait the job fails with
   * service_unavailable. Keep the total plus FFMPEG_TIMEOUT_SECONDS under the broker's consumer timeout (30 min).
   */
  retryDelaysMs?: number[];
  now?: () => Date;
}

/** About five minutes of tries. */
const RETRY_DELAYS_MS = [1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 60_000, 60_000, 60_000];

/**
 * Failures that trying again cannot mend: the input's, options the input cannot honour (a missing track, a
 * cover time past the end), and FFmpeg's own (a crash or its time cap).
 */
function isFinal(error: unknown): error is AppError {
  return error instanceof AppError &&
    (INPUT_ERROR_CODES.includes(error.code) || error.code === "invalid_option" ||
      error.code === "conversion_failed");
}

/** Creates the function that handles one task and says what to do with its message. */
export function createTaskHandler(deps: WorkerDeps): (task: ConversionRequested) => Promise<Outcome> {
  const { blobs, events, workDir, limits, progressEveryMs = 500, now = () => new Date() } = deps;
  const retryDelaysMs = deps.retryDelaysMs ?? RETRY_DELAYS_MS;
  const at = () => now().toISOString();
  const fail = (jobId: string, code: string, message: string) =>
    events.publish({ type: "job.failed", version: 1, jobId, at: at(), error: { code, message } });

  return async (task) => {
    for (let attempt = 0;; attempt++) {
      try {
        await convert(task);
        return "ack";
      } catch (error) {
        try {
          if (isFinal(error)) {
            await fail(task.jobId, error.code, error.message);
            return "ack";
          }
          if (attempt >= retryDelaysMs.length) {
            console.error(`Job ${task.jobId} failed after ${attempt + 1} tries; giving up:`, error);
            await fail(
              task.jobId,
              "service_unavailable",
              "Storage or the queue stayed unreachable; please try again",
            );
            return "ack";
          }
        } catch (publishError) {
          // Not even the failure could be reported: hand the task back to the broker.
          console.error(`Job ${task.jobId}: could not report its failure; the task goes back:`, publishError);
          return "retry";
        }
        console.error(`Job ${task.jobId} failed (try ${attempt + 1}); trying again:`, error);
        await new Promise((resolve) => setTimeout(resolve, retryDelaysMs[attempt]));
      }
    }
  };

  /** One try at a task; throws what went wrong. */
  async function convert(task: ConversionRequested): Promise<void> {
    const { jobId } = task;
    const dir = `${workDir}/${jobId}-${crypto.randomUUID().slice(0, 8)}`;
    await Deno.mkdir(dir, { recursive: true });
    try {
      const object = await blobs.get(task.inputKey);
      if (!object) {
        await fail(jobId, "internal", "The uploaded video is no longer in storage");
        return;
      }
      const inputPath = `${dir}/input`;
      const outputPath = `${dir}/output.mp3`;
      const file = await Deno.open(inputPath, { write: true, createNew: true });
      await object.body.pipeTo(file.writable);

      const probe = await probeInput(inputPath, {
        name: task.filename,
        ffprobePath: limits.ffprobePath,
        maxDuration: limits.maxDuration,
        maxStreams: limits.maxStreams,
      });
      const plan = planConversion(probe, task.options);
      await events.publish({
        type: "job.started",
        version: 1,
        jobId,
        at: at(),
        duration: plan.duration ?? probe.duration,
      });

      let reported = 0;
      let lastSent = 0;
      let sending = Promise.resolve();
      await transcode(inputPath, outputPath, {
        plan,
        workDir: dir,
        name: task.filename,
        ffmpegPath: limits.ffmpegPath,
        maxDuration: limits.maxDuration,
        timeoutMs: limits.timeoutMs,
        onProgress({ fraction, speed, eta }) {
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
      await sending;

      const result = await probeInput(outputPath, {
        ffprobePath: limits.ffprobePath,
        maxDuration: Number.MAX_SAFE_INTEGER,
        maxStreams: 2, // the audio, and the cover picture if there is one
      });
      // An MP3 from ffmpeg always states its duration (its Xing header); 0 would mean the file is empty.
      const duration = result.duration ?? 0;
      // Hashed on its way into storage: the MP3 is read once.
      const tap = sha256Tap();
      const output = await Deno.open(outputPath, { read: true });
      const { size } = await blobs.put(task.outputKey, output.readable.pipeThrough(tap.stream), {
        contentType: "audio/mpeg",
      });
      const audio = result.audio[0];
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
          bitrate: audioBitrate(audio?.bitrate, size, duration),
          ...(plan.encoder?.mode === "vbr" ? { quality: plan.encoder.quality } : {}),
          sampleRate: audio?.sampleRate ?? plan.sampleRate,
          channels: audio?.channels ?? plan.channels,
          sha256: tap.digest(),
          method: plan.method,
        },
      });
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }
}

/** The MP3's average bitrate in bit/s: as ffprobe read it, else from the file's size (which includes the tags). */
function audioBitrate(probed: number | undefined, size: number, duration: number): number {
  if (probed) return Math.round(probed);
  return duration > 0 ? Math.round((size * 8) / duration) : 0;
}

/** Consumes `tasks`, running at most `concurrency` conversions at once. */
export function startWorker(
  tasks: Queue<ConversionRequested>,
  deps: WorkerDeps & { concurrency?: number },
): Promise<Subscription> {
  const handle = createTaskHandler(deps);
  return tasks.consume((task) => handle(task), { prefetch: deps.concurrency ?? 1 });
}
