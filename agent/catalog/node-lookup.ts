// Does a Node of this name exist? Asked on demand (GET /api/v1/nodes/<name>) instead of every
// agent watching every full Node object: at 1,000 nodes each Node status update (every few
// seconds per node) would reach every agent. The only user is SOCKS5 telling "that node has no
// edgemesh agent" from "no such name", for names that are not in the peer directory. Answers,
// negative ones too, are cached briefly; the cache is bounded and concurrent asks share one GET.
import { KubeApiError, type KubeClient } from './kube-client.ts'

export interface NodeLookupOptions {
  client: Pick<KubeClient, 'request'>
  /** how long an answer is reused (default 30 s) */
  ttlMs?: number
  /** names remembered at most (default 1024; the oldest go first) */
  maxEntries?: number
  /** per GET (default 5 s) */
  timeoutMs?: number
  /**
   * GETs at once at most (default 16): names come from SOCKS5 clients, each new one a GET, so a
   * client asking for many names cannot turn into as many concurrent requests to the apiserver;
   * over the cap a name is answered as unknown (exists() throws)
   */
  maxInFlight?: number
  now?: () => number
}

/** A Kubernetes node name is a DNS subdomain: anything else cannot be one, no need to ask. */
const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/
export const couldBeNodeName = (name: string): boolean => name.length > 0 && name.length <= 253 && SUBDOMAIN.test(name)

export class KubeNodeLookup {
  private readonly opts: NodeLookupOptions
  private readonly cache = new Map<string, { exists: boolean, at: number }>()
  private readonly inFlight = new Map<string, Promise<boolean>>()
  /** GETs made (tests, and to see the cache work) */
  requests = 0

  constructor (opts: NodeLookupOptions) { this.opts = opts }

  private now (): number { return this.opts.now?.() ?? Date.now() }

  /**
   * true: a Node of that name exists; false: it does not (or the name cannot be one). Throws
   * when the API cannot answer (not cached: the next ask tries again).
   */
  async exists (name: string): Promise<boolean> {
    if (!couldBeNodeName(name)) return false
    const hit = this.cache.get(name)
    if (hit != null && this.now() - hit.at < (this.opts.ttlMs ?? 30_000)) return hit.exists
    const pending = this.inFlight.get(name)
    if (pending != null) return await pending
    if (this.inFlight.size >= (this.opts.maxInFlight ?? 16)) throw new KubeApiError(0, 'TooManyLookups', `node lookup of ${name}: ${this.inFlight.size} already in flight`)
    const ask = this.ask(name).finally(() => { this.inFlight.delete(name) })
    this.inFlight.set(name, ask)
    return await ask
  }

  private async ask (name: string): Promise<boolean> {
    this.requests++
    let exists: boolean
    try {
      await this.opts.client.request('GET', `/api/v1/nodes/${encodeURIComponent(name)}`, undefined, { timeoutMs: this.opts.timeoutMs ?? 5_000 })
      exists = true
    } catch (err) {
      if (!(err instanceof KubeApiError && err.status === 404)) throw err
      exists = false
    }
    this.cache.delete(name) // re-inserted last: Map order is the eviction order
    this.cache.set(name, { exists, at: this.now() })
    const max = this.opts.maxEntries ?? 1024
    while (this.cache.size > max) this.cache.delete(this.cache.keys().next().value!)
    return exists
  }
}
