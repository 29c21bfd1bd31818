// Start-up that fails whole or not at all: each part registers its stop (and the removal of what
// it created: a device, rules, a socket) as soon as there is something to undo; a failed start,
// or a normal stop, unwinds the stack in reverse, so what started last stops first and nothing a
// failed start-up created outlives it.
import { ConfigError } from './errors.ts'

export class StopStack {
  private readonly entries: Array<{ name: string, stop: () => unknown }> = []
  private unwinding: Promise<void> | undefined
  private readonly onStopError: (name: string, err: unknown) => void

  constructor (onStopError: (name: string, err: unknown) => void) {
    this.onStopError = onStopError
  }

  /** `stop` runs when the stack unwinds (it must cope with a part that only half started). */
  push (name: string, stop: () => unknown): void {
    if (this.unwinding != null) throw new Error(`${name}: registered after the stop began`)
    this.entries.push({ name, stop })
  }

  /**
   * Runs one start-up step; a failure is rethrown naming the part (`metrics: listen EADDRINUSE
   * ...`), configuration errors as they are (they already name their field).
   */
  async step<T> (name: string, start: () => Promise<T> | T): Promise<T> {
    try {
      return await start()
    } catch (err) {
      throw labelled(name, err)
    }
  }

  /** step(), then registers `stop` for what it started. */
  async start<T> (name: string, start: () => Promise<T> | T, stop: (started: T) => unknown): Promise<T> {
    const started = await this.step(name, start)
    this.push(name, () => stop(started))
    return started
  }

  /** Stops everything in reverse order of registration; a stop that fails is reported and the rest still run. Idempotent. */
  async unwind (): Promise<void> {
    this.unwinding ??= (async () => {
      for (let e = this.entries.pop(); e != null; e = this.entries.pop()) {
        try { await e.stop() } catch (err) { this.onStopError(e.name, err) }
      }
    })()
    await this.unwinding
  }
}

/** The error with the part's name in front (unless it names it already); the original is its cause. */
export function labelled (name: string, err: unknown): unknown {
  if (err instanceof ConfigError) return err
  const message = err instanceof Error ? err.message : String(err)
  if (message.startsWith(`${name}:`) || message.startsWith(`${name} `)) return err
  return new Error(`${name}: ${message}`, { cause: err })
}
