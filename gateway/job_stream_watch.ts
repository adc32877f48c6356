/**
 * Reads a job's Server-Sent Events (Metadata's GET /jobs/:id/events: `event: job`, the job as JSON in `data`) to
 * learn the moment it reaches a given status, instead of reading the job again and again.
 */

/**
 * Reads `body` until an event shows the job in one of `statuses` (true), or the stream ends first (false). The
 * stream is cancelled either way; it rejects only as reading it does (a network error, an abort).
 */
export async function streamShows(
  body: ReadableStream<Uint8Array>,
  statuses: readonly string[],
): Promise<boolean> {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += value.replaceAll("\r\n", "\n");
      for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (statuses.includes(statusOf(block) ?? "")) return true;
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

/** The `status` of the job an SSE event block carries, if it is a job event with one. */
function statusOf(block: string): string | undefined {
  let event = "message";
  const data: string[] = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (event !== "job" || data.length === 0) return undefined;
  try {
    const status = JSON.parse(data.join("\n"))?.status;
    return typeof status === "string" ? status : undefined;
  } catch {
    return undefined;
  }
}
