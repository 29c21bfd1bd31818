// Endpoint selection for the ClusterIP proxy: one Balancer per Service picks an endpoint for each
// new connection or flow. Pure: no I/O, the clock and the random source are injectable.
//
// Policies follow Envoy/Istio (round robin, random, least request with power of two choices,
// consistent hash on a header or the source IP, backed by a Maglev table), and Kubernetes
// sessionAffinity: ClientIP is layered on top of any of them, like kube-proxy does.

import type { ServiceInfo } from '../catalog/model.ts'

export type Policy =
  | { kind: 'round-robin' }
  | { kind: 'random' }
  | { kind: 'least-request' }
  | { kind: 'consistent-hash', on: { header: string } | { sourceIp: true } }

export interface PickContext {
  clientIp: string
  /** request header lookup, when the proxy sees one (L7); absent for plain L4 flows */
  header?: (name: string) => string | undefined
}

export interface BalancerOptions {
  /** default round robin */
  policy?: Policy
  sessionAffinity?: ServiceInfo['sessionAffinity']
  /** Kubernetes default 10800 (3 h); values that are not positive fall back to it */
  affinityTimeoutSeconds?: number
  /** bound on remembered clients; the least recently used one goes first. Default 65536 */
  maxAffinityEntries?: number
  /** ms; default Date.now */
  now?: () => number
  /** uniform in [0, 1); default Math.random */
  random?: () => number
}

export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10_800
const DEFAULT_MAX_AFFINITY = 65_536
const MAGLEV_TABLE_SIZE = 65_537 // Envoy's default, a prime

// ---------------------------------------------------------------------------------------------
// Hashing: FNV-1a over UTF-16 code units with the murmur3 finalizer, seeded. Stable across runs
// and processes, so every agent maps a key to the same endpoint.

export function hash32 (s: string, seed = 0): number {
  let h = (0x811c9dc5 ^ seed) >>> 0
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

function isPrime (n: number): boolean {
  if (n < 2) return false
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false
  return true
}

/** A Maglev lookup table over sorted endpoints (Eisenbud et al., NSDI'16), as in Envoy. */
function buildMaglev (endpoints: readonly string[]): Int32Array {
  const n = endpoints.length
  let m = MAGLEV_TABLE_SIZE
  if (n * 10 > m) { m = n * 100 + 1; while (!isPrime(m)) m += 2 }
  const offset = new Array<number>(n)
  const skip = new Array<number>(n)
  const next = new Array<number>(n).fill(0)
  for (let i = 0; i < n; i++) {
    const key = endpoints[i] as string
    offset[i] = hash32(key, 0x5bd1e995) % m
    skip[i] = (hash32(key, 0x27d4eb2f) % (m - 1)) + 1
  }
  const table = new Int32Array(m).fill(-1)
  let filled = 0
  while (true) {
    for (let i = 0; i < n; i++) {
      const off = offset[i] as number
      const sk = skip[i] as number
      let j = next[i] as number
      let c = (off + j * sk) % m
      while (table[c] !== -1) { j++; c = (off + j * sk) % m }
      table[c] = i
      next[i] = j + 1
      if (++filled === m) return table
    }
  }
}

// ---------------------------------------------------------------------------------------------
// A sorted, de-duplicated view of one endpoint set; the Maglev table is built lazily per set.

class EndpointSet {
  readonly sorted: string[]
  readonly members: Set<string>
  private maglev: Int32Array | undefined

  constructor (members: Set<string>) {
    this.members = members
    this.sorted = [...members].sort()
  }

  sameAs (other: Set<string>): boolean {
    if (other.size !== this.members.size) return false
    for (const e of other) if (!this.members.has(e)) return false
    return true
  }

  table (): Int32Array {
    this.maglev ??= buildMaglev(this.sorted)
    return this.maglev
  }

  /** index of the first key strictly greater than `key`, or sorted.length */
  upperBound (key: string): number {
    let lo = 0
    let hi = this.sorted.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((this.sorted[mid] as string) <= key) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}

const ALL = (_e: string): boolean => true

interface Affinity { endpoint: string, lastUsed: number }

export class Balancer {
  private policy: Policy = { kind: 'round-robin' }
  private affinity = false
  private timeoutMs = DEFAULT_AFFINITY_TIMEOUT_SECONDS * 1000
  private maxAffinity = DEFAULT_MAX_AFFINITY
  private readonly now: () => number
  private readonly random: () => number

  private lastInput: readonly string[] | undefined
  private set: EndpointSet = new EndpointSet(new Set())
  /** round robin: the last endpoint handed out; the next pick is the following one in sorted order */
  private cursor: string | undefined
  private readonly inflight = new Map<string, number>()
  /** client IP → sticky choice, in least-recently-used-first order */
  private readonly clients = new Map<string, Affinity>()

  constructor (opts: BalancerOptions = {}) {
    this.now = opts.now ?? Date.now
    this.random = opts.random ?? Math.random
    this.configure(opts)
  }

  /** Changes the policy or the affinity settings, keeping in-flight counts and the RR position. */
  configure (opts: Pick<BalancerOptions, 'policy' | 'sessionAffinity' | 'affinityTimeoutSeconds' | 'maxAffinityEntries'>): void {
    if (opts.policy != null) this.policy = opts.policy
    if (opts.sessionAffinity != null) {
      this.affinity = opts.sessionAffinity === 'ClientIP'
      if (!this.affinity) this.clients.clear()
    }
    if (opts.affinityTimeoutSeconds != null) {
      const t = opts.affinityTimeoutSeconds
      this.timeoutMs = (Number.isFinite(t) && t > 0 ? t : DEFAULT_AFFINITY_TIMEOUT_SECONDS) * 1000
    }
    if (opts.maxAffinityEntries != null) this.maxAffinity = Math.max(1, Math.floor(opts.maxAffinityEntries))
  }

  /**
   * Picks an endpoint among `endpoints` (already ready/serving) that is not in `exclude`
   * (endpoints whose dial failed for this connection); undefined when none is left.
   */
  pick (endpoints: readonly string[], ctx: PickContext, exclude?: ReadonlySet<string>): string | undefined {
    const set = this.refresh(endpoints)
    const n = set.sorted.length
    if (n === 0) return undefined
    const ok = exclude == null || exclude.size === 0 ? ALL : (e: string): boolean => !exclude.has(e)
    if (exclude != null && exclude.size >= n && set.sorted.every((e) => exclude.has(e))) return undefined

    if (!this.affinity) return this.choose(set, ctx, ok)

    const now = this.now()
    this.sweep(now)
    const prev = this.clients.get(ctx.clientIp)
    if (prev != null) {
      this.clients.delete(ctx.clientIp) // re-inserted below: most recently used goes last
      if (now - prev.lastUsed < this.timeoutMs && set.members.has(prev.endpoint) && ok(prev.endpoint)) {
        prev.lastUsed = now
        this.clients.set(ctx.clientIp, prev)
        return prev.endpoint
      }
    }
    const chosen = this.choose(set, ctx, ok)
    if (chosen != null) {
      this.clients.set(ctx.clientIp, { endpoint: chosen, lastUsed: now })
      while (this.clients.size > this.maxAffinity) {
        const oldest = this.clients.keys().next().value as string
        this.clients.delete(oldest)
      }
    }
    return chosen
  }

  /** A request or connection to `endpoint` started (least-request counting). */
  begin (endpoint: string): void {
    this.inflight.set(endpoint, (this.inflight.get(endpoint) ?? 0) + 1)
  }

  /** A request or connection to `endpoint` finished. Unbalanced calls never go below zero. */
  end (endpoint: string): void {
    const c = this.inflight.get(endpoint) ?? 0
    if (c <= 1) this.inflight.delete(endpoint)
    else this.inflight.set(endpoint, c - 1)
  }

  inFlight (endpoint: string): number {
    return this.inflight.get(endpoint) ?? 0
  }

  /** Number of remembered ClientIP affinities (after dropping expired ones). */
  affinityEntries (): number {
    this.sweep(this.now())
    return this.clients.size
  }

  // -------------------------------------------------------------------------------------------

  private refresh (endpoints: readonly string[]): EndpointSet {
    if (endpoints === this.lastInput) return this.set
    this.lastInput = endpoints
    const members = new Set(endpoints)
    if (!this.set.sameAs(members)) this.set = new EndpointSet(members)
    return this.set
  }

  /** Entries are in last-use order with one timeout, so expired ones are all at the front. */
  private sweep (now: number): void {
    for (const [ip, a] of this.clients) {
      if (now - a.lastUsed < this.timeoutMs) break
      this.clients.delete(ip)
    }
  }

  private randomIndex (n: number): number {
    const i = Math.floor(this.random() * n)
    return i >= 0 && i < n ? i : 0
  }

  private choose (set: EndpointSet, ctx: PickContext, ok: (e: string) => boolean): string | undefined {
    const p = this.policy
    switch (p.kind) {
      case 'round-robin': return this.roundRobin(set, ok)
      case 'random': return this.uniform(set, ok)
      case 'least-request': return this.leastRequest(set, ok)
      case 'consistent-hash': {
        const key = 'header' in p.on ? ctx.header?.(p.on.header) : ctx.clientIp
        // like Envoy: no hash key (missing header) means a random host
        if (key == null) return this.uniform(set, ok)
        return this.maglev(set, key, ok)
      }
    }
  }

  /**
   * The endpoint after the previous choice in sorted order. The position is a key, not an index,
   * so endpoint changes neither reset it nor shift it: everyone keeps its turn. The first
   * position is random so that agents started together do not all begin on the same endpoint.
   */
  private roundRobin (set: EndpointSet, ok: (e: string) => boolean): string | undefined {
    const n = set.sorted.length
    const start = this.cursor == null ? this.randomIndex(n) : set.upperBound(this.cursor) % n
    for (let k = 0; k < n; k++) {
      const e = set.sorted[(start + k) % n] as string
      if (ok(e)) { this.cursor = e; return e }
    }
    return undefined
  }

  private candidates (set: EndpointSet, ok: (e: string) => boolean): readonly string[] {
    return ok === ALL ? set.sorted : set.sorted.filter(ok)
  }

  private uniform (set: EndpointSet, ok: (e: string) => boolean): string | undefined {
    const first = set.sorted[this.randomIndex(set.sorted.length)] as string
    if (ok(first)) return first
    const c = this.candidates(set, ok)
    return c.length === 0 ? undefined : c[this.randomIndex(c.length)]
  }

  /** Power of two choices (Envoy's LEAST_REQUEST): two distinct random candidates, fewer in flight wins. */
  private leastRequest (set: EndpointSet, ok: (e: string) => boolean): string | undefined {
    const c = this.candidates(set, ok)
    if (c.length <= 1) return c[0]
    const i = this.randomIndex(c.length)
    let j = this.randomIndex(c.length - 1)
    if (j >= i) j++
    const a = c[i] as string
    const b = c[j] as string
    return this.inFlight(b) < this.inFlight(a) ? b : a
  }

  /** Maglev lookup; an excluded endpoint moves on along the table, deterministically per key. */
  private maglev (set: EndpointSet, key: string, ok: (e: string) => boolean): string | undefined {
    const table = set.table()
    const m = table.length
    const start = hash32(key, 0x9e3779b9) % m
    for (let k = 0; k < m; k++) {
      const e = set.sorted[table[(start + k) % m] as number] as string
      if (ok(e)) return e
    }
    return undefined
  }
}

// ---------------------------------------------------------------------------------------------
// Istio DestinationRule (networking.istio.io) → Policy

export interface DestinationRuleInfo {
  namespace: string
  name: string
  /** lower case, without a trailing dot */
  host: string
  policy: Policy
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

function parseLoadBalancer (lb: unknown): Policy | undefined {
  if (!isObj(lb)) return undefined
  const hasSimple = lb.simple != null
  const hasHash = lb.consistentHash != null
  if (hasSimple === hasHash) return undefined // a proto oneof: exactly one
  if (hasSimple) {
    switch (lb.simple) {
      case 'ROUND_ROBIN': return { kind: 'round-robin' }
      case 'RANDOM': return { kind: 'random' }
      case 'LEAST_REQUEST':
      case 'LEAST_CONN': return { kind: 'least-request' }
      default: return undefined
    }
  }
  const ch = lb.consistentHash
  if (!isObj(ch)) return undefined
  const header = ch.httpHeaderName
  const sourceIp = ch.useSourceIp
  const others = ['httpCookie', 'httpQueryParameterName'].some((k) => ch[k] != null)
  if (others) return undefined
  if (typeof header === 'string' && header !== '' && sourceIp == null) return { kind: 'consistent-hash', on: { header: header.toLowerCase() } }
  if (sourceIp === true && header == null) return { kind: 'consistent-hash', on: { sourceIp: true } }
  return undefined
}

const normHost = (h: string): string => h.trim().toLowerCase().replace(/\.$/, '')

/**
 * Reads an Istio DestinationRule: spec.host and spec.trafficPolicy.loadBalancer. Undefined for
 * anything else, including load balancer settings this proxy does not implement.
 */
export function parseDestinationRule (obj: unknown): DestinationRuleInfo | undefined {
  if (!isObj(obj)) return undefined
  if (obj.kind != null && obj.kind !== 'DestinationRule') return undefined
  if (obj.apiVersion != null && (typeof obj.apiVersion !== 'string' || !obj.apiVersion.startsWith('networking.istio.io/'))) return undefined
  const meta = isObj(obj.metadata) ? obj.metadata : {}
  const spec = obj.spec
  if (!isObj(spec) || typeof spec.host !== 'string') return undefined
  const host = normHost(spec.host)
  if (host === '') return undefined
  const tp = spec.trafficPolicy
  if (!isObj(tp)) return undefined
  const policy = parseLoadBalancer(tp.loadBalancer)
  if (policy == null) return undefined
  return {
    namespace: typeof meta.namespace === 'string' ? meta.namespace : '',
    name: typeof meta.name === 'string' ? meta.name : '',
    host,
    policy
  }
}

/**
 * How specifically `rule` names the Service: 0 = not at all, higher wins. Exact names (a short
 * name only in the rule's own namespace, `name.ns`, `name.ns.svc`, `name.ns.svc.<domain>`)
 * beat wildcards (`*`, `*.ns.svc.<domain>`), and longer wildcard suffixes beat shorter ones.
 */
function specificity (rule: Pick<DestinationRuleInfo, 'namespace' | 'host'>, ns: string, name: string, domain: string): number {
  const host = normHost(rule.host)
  const fqdn = `${name}.${ns}.svc.${domain}`
  if (host === name) return rule.namespace === ns ? 1_000_000 : 0
  if (host === `${name}.${ns}` || host === `${name}.${ns}.svc` || host === fqdn) return 1_000_000
  if (host === '*') return 1
  if (host.startsWith('*.') && fqdn.endsWith(host.slice(1))) return 1 + host.length
  return 0
}

/**
 * The DestinationRule that applies to a Service, like Istio for Kubernetes hosts: a rule in the
 * Service's namespace wins over rules elsewhere; then the most specific host; then, for a
 * stable answer, the lowest namespace/name.
 */
export function matchDestinationRule<R extends Pick<DestinationRuleInfo, 'namespace' | 'name' | 'host'>> (
  rules: Iterable<R>, svc: { namespace: string, name: string }, clusterDomain: string
): R | undefined {
  const ns = svc.namespace.toLowerCase()
  const name = svc.name.toLowerCase()
  const domain = normHost(clusterDomain)
  let best: R | undefined
  let bestScore = 0
  for (const r of rules) {
    const s = specificity(r, ns, name, domain)
    if (s === 0) continue
    const score = s + (r.namespace === svc.namespace ? 10_000_000 : 0)
    if (score > bestScore || (score === bestScore && best != null && `${r.namespace}/${r.name}` < `${best.namespace}/${best.name}`)) {
      best = r
      bestScore = score
    }
  }
  return best
}
