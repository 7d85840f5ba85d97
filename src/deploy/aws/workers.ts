/** Runs `count` workers at once; the first to fail aborts `stop` (the others end soon after), and its error is thrown once all have ended. */
export async function allOrStop(count: number, worker: () => Promise<void>, stop: AbortController): Promise<void> {
  let first: { error: unknown } | undefined;
  await Promise.all(Array.from({ length: count }, () => worker().catch((error: unknown) => {
    first ??= { error };
    stop.abort();
  })));
  if (first) throw first.error;
}
