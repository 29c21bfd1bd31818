// Rate-limited logging: what arrives thousands a second (refusals, forged datagrams) is counted
// always and logged once per key per interval. Used by the relay (server/limits.ts) and the agent
// (agent/tunnel/rendezvous-client.ts).

/** Lets one log line per key through every `intervalMs` (refusals can arrive thousands a second). */
export class LogThrottle {
  private readonly last = new Map<string, number>()
  private readonly intervalMs: number
  private readonly maxKeys: number

  constructor (intervalMs: number, maxKeys = 1024) {
    this.intervalMs = intervalMs
    this.maxKeys = maxKeys
  }

  shouldLog (key: string, now: number): boolean {
    const at = this.last.get(key)
    if (at != null && now - at < this.intervalMs) return false
    if (at == null && this.last.size >= this.maxKeys) {
      for (const [k, t] of this.last) if (now - t >= this.intervalMs) this.last.delete(k)
      if (this.last.size >= this.maxKeys) return false
    }
    this.last.set(key, now)
    return true
  }
}
