/**
 * @module
 * The Convert worker: hardened FFprobe/FFmpeg runs on conversion tasks, with progress reported as events.
 */
export {
  type ConvertLimits,
  createTaskHandler,
  limitsFromEnv,
  startWorker,
  type WorkerDeps,
  type WorkerOptions,
} from "./worker.ts";
export { checkFfmpeg } from "./ffmpeg_check.ts";
