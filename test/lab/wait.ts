/** Retries fn until it returns without throwing, or rethrows its last error after timeoutMs. */
export async function eventually<T> (fn: () => Promise<T>, timeoutMs: number, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      return await fn()
    } catch (err) {
      if (Date.now() >= deadline) throw err
      await new Promise((resolve) => setTimeout(resolve, intervalMs))
    }
  }
}

export const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }
