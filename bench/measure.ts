/** What every bench script measures with: a shell command, a wall-clock time, a median. */

/** Runs `command` in bash; its stdout, or an error with its stderr. */
export async function sh(command: string): Promise<string> {
  const out = await new Deno.Command("bash", { args: ["-c", command], stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`${command}\n${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

/** How long `fn` takes, in seconds. */
export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

/** The median of `values`. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
