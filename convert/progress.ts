/**
 * A pure parser of ffmpeg's `-progress` output: blocks of `key=value` lines, each ending with
 * `progress=continue` or `progress=end`.
 */

/** One progress report of ffmpeg. */
export interface ProgressUpdate {
  /** How much of the output ffmpeg has written, in seconds (the last known value when ffmpeg says "N/A"). */
  outTimeSeconds: number;
  /** Encoding speed as a multiple of real time, when ffmpeg knows it. */
  speed?: number;
  /** Whether this is ffmpeg's last report (`progress=end`). */
  done: boolean;
}

/** Turns chunks of `-progress` text into updates; keeps a partial line until its end arrives. */
export class ProgressParser {
  #rest = "";
  #outTime = 0;
  #speed: number | undefined;

  /** Parses a chunk of text and returns the updates it completes. */
  push(text: string): ProgressUpdate[] {
    const lines = (this.#rest + text).split("\n");
    this.#rest = lines.pop() ?? "";
    const updates: ProgressUpdate[] = [];
    for (const line of lines) {
      const update = this.#line(line.trim());
      if (update) updates.push(update);
    }
    return updates;
  }

  /** Parses what is left after the stream ends (a last line without its newline). */
  flush(): ProgressUpdate[] {
    const rest = this.#rest;
    this.#rest = "";
    const update = this.#line(rest.trim());
    return update ? [update] : [];
  }

  #line(line: string): ProgressUpdate | undefined {
    const eq = line.indexOf("=");
    if (eq <= 0) return undefined;
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1).trim();
    switch (key) {
      // Both are microseconds (out_time_ms is misnamed); ffmpeg writes both, the same value.
      case "out_time_us":
      case "out_time_ms": {
        const us = Number(value);
        if (value !== "" && Number.isFinite(us) && us >= 0) this.#outTime = us / 1e6;
        return undefined;
      }
      case "out_time": {
        const seconds = parseClock(value);
        if (seconds !== undefined) this.#outTime = seconds;
        return undefined;
      }
      case "speed": {
        const speed = Number.parseFloat(value);
        this.#speed = Number.isFinite(speed) && speed >= 0 ? speed : undefined;
        return undefined;
      }
      case "progress": {
        const update: ProgressUpdate = { outTimeSeconds: this.#outTime, done: value === "end" };
        if (this.#speed !== undefined) update.speed = this.#speed;
        return update;
      }
      default:
        return undefined;
    }
  }
}

/** A stream from `-progress` text chunks to updates. */
export function progressStream(): TransformStream<string, ProgressUpdate> {
  const parser = new ProgressParser();
  return new TransformStream({
    transform(chunk, controller) {
      for (const update of parser.push(chunk)) controller.enqueue(update);
    },
    flush(controller) {
      for (const update of parser.flush()) controller.enqueue(update);
    },
  });
}

/** `HH:MM:SS.micro` (possibly negative or "N/A") to seconds, or undefined when it is not a time. */
function parseClock(value: string): number | undefined {
  const match = /^(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$/.exec(value);
  if (!match) return undefined;
  return Number(match[1]) * 3600 + Number(match[2]) * 60 + Number(match[3]);
}
