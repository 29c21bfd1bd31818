// Endpoint selection for the ClusterIP proxy (agent/proxy/lb.ts): policies, ClientIP affinity,
// exclusion of failed endpoints, and Istio DestinationRule parsing and host matching.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { Balancer, hash32, matchDestinationRule, parseDestinationRule, type DestinationRuleInfo, type PickContext, type Policy } from '../../agent/proxy/lb.ts'

/** mulberry32: a small seeded PRNG, so statistical tests are reproducible */
function rng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const eps = (n: number, base = 0): string[] => Array.from({ length: n }, (_, i) => `10.1.${Math.floor((base + i) / 250)}.${((base + i) % 250) + 1}:8080`)
const ctx = (clientIp = '192.168.0.1', headers: Record<string, string> = {}): PickContext => ({ clientIp, header: (n) => headers[n] })

function tally (b: Balancer, endpoints: readonly string[], picks: number, c: (i: number) => PickContext = () => ctx()): Map<string, number> {
  const counts = new Map<string, number>()
  for (let i = 0; i < picks; i++) {
    const e = b.pick(endpoints, c(i))
    expect(e).toBeDefined()
    counts.set(e as string, (counts.get(e as string) ?? 0) + 1)
  }
  return counts
}

const policies: Policy[] = [
  { kind: 'round-robin' },
  { kind: 'random' },
  { kind: 'least-request' },
  { kind: 'consistent-hash', on: { header: 'x-user' } },
  { kind: 'consistent-hash', on: { sourceIp: true } }
]

describe('round robin', () => {
  it('gives exactly equal counts (±1) over 10,000 picks', () => {
    for (const n of [1, 3, 7, 10]) {
      const b = new Balancer({ policy: { kind: 'round-robin' }, random: rng(n) })
      const endpoints = eps(n)
      const counts = tally(b, endpoints, 10_000)
      expect(counts.size).toBe(n)
      const values = [...counts.values()]
      expect(Math.max(...values) - Math.min(...values)).toBeLessThanOrEqual(1)
      expect(values.reduce((a, v) => a + v, 0)).toBe(10_000)
    }
  })

  it('cycles through every endpoint once per round, whatever the input order', () => {
    const b = new Balancer({ policy: { kind: 'round-robin' }, random: rng(1) })
    const endpoints = eps(5)
    const round1 = Array.from({ length: 5 }, () => b.pick(endpoints, ctx()))
    const shuffled = [endpoints[3], endpoints[0], endpoints[4], endpoints[2], endpoints[1]] as string[]
    const round2 = Array.from({ length: 5 }, () => b.pick(shuffled, ctx()))
    expect(new Set(round1).size).toBe(5)
    expect(round2).toEqual(round1)
  })

  it('stays fair when the endpoint set changes (no reset to the first endpoint)', () => {
    const b = new Balancer({ policy: { kind: 'round-robin' }, random: rng(2) })
    const stable = eps(9)
    const flapping = eps(1, 100)[0] as string
    const counts = new Map<string, number>()
    for (let i = 0; i < 10_000; i++) {
      // a new array every pick, and one endpoint that comes and goes every 3 picks
      const endpoints = Math.floor(i / 3) % 2 === 0 ? [...stable, flapping] : [...stable]
      const e = b.pick(endpoints, ctx()) as string
      counts.set(e, (counts.get(e) ?? 0) + 1)
    }
    const stableCounts = stable.map((e) => counts.get(e) ?? 0)
    expect(Math.max(...stableCounts) - Math.min(...stableCounts)).toBeLessThanOrEqual(2)
    expect(counts.get(flapping)).toBeGreaterThan(0)
  })

  it('gives a newly added endpoint its turn within one round and drops a removed one at once', () => {
    const b = new Balancer({ policy: { kind: 'round-robin' }, random: rng(3) })
    const [a, c, d] = eps(3) as [string, string, string]
    const seen: string[] = []
    for (let i = 0; i < 4; i++) seen.push(b.pick([a, c], ctx()) as string)
    expect(new Set(seen)).toEqual(new Set([a, c]))
    const next3 = Array.from({ length: 3 }, () => b.pick([a, c, d], ctx()))
    expect(new Set(next3)).toEqual(new Set([a, c, d]))
    const after = Array.from({ length: 4 }, () => b.pick([a, d], ctx()))
    expect(after).not.toContain(c)
    expect(after.filter((e) => e === a)).toHaveLength(2)
  })

  it('starts at a random position, so agents started together spread their first picks', () => {
    const endpoints = eps(10)
    const first = new Set(Array.from({ length: 50 }, (_, s) => new Balancer({ random: rng(s + 1) }).pick(endpoints, ctx())))
    expect(first.size).toBeGreaterThan(5)
  })
})

describe('random', () => {
  it('is uniform within chi-square bounds over 10,000 picks', () => {
    const n = 10
    const endpoints = eps(n)
    for (const seed of [1, 2, 3, 4, 5]) {
      const b = new Balancer({ policy: { kind: 'random' }, random: rng(seed) })
      const counts = tally(b, endpoints, 10_000)
      expect(counts.size).toBe(n)
      const expected = 10_000 / n
      const chi2 = [...counts.values()].reduce((a, v) => a + (v - expected) ** 2 / expected, 0)
      // 9 degrees of freedom: P(chi2 > 40) < 1e-5
      expect(chi2).toBeLessThan(40)
      const sigma = Math.sqrt(10_000 * (1 / n) * (1 - 1 / n))
      for (const v of counts.values()) expect(Math.abs(v - expected)).toBeLessThan(5 * sigma)
    }
  })

  it('stays uniform over the remaining endpoints when some are excluded', () => {
    const endpoints = eps(6)
    const exclude = new Set(endpoints.slice(0, 2))
    const b = new Balancer({ policy: { kind: 'random' }, random: rng(7) })
    const counts = new Map<string, number>()
    for (let i = 0; i < 12_000; i++) {
      const e = b.pick(endpoints, ctx(), exclude) as string
      counts.set(e, (counts.get(e) ?? 0) + 1)
    }
    expect([...counts.keys()].sort()).toEqual(endpoints.slice(2).sort())
    const sigma = Math.sqrt(12_000 * 0.25 * 0.75)
    for (const v of counts.values()) expect(Math.abs(v - 3000)).toBeLessThan(5 * sigma)
  })
})

describe('least request (power of two choices)', () => {
  it('always picks the idle one of two endpoints', () => {
    const [a, c] = eps(2) as [string, string]
    const b = new Balancer({ policy: { kind: 'least-request' }, random: rng(1) })
    b.begin(a)
    const counts = tally(b, [a, c], 1000)
    expect(counts.get(c)).toBe(1000)
    expect(counts.get(a)).toBeUndefined()
  })

  it('prefers idle endpoints when some have requests in flight', () => {
    const endpoints = eps(10)
    const busy = endpoints.slice(0, 5)
    const b = new Balancer({ policy: { kind: 'least-request' }, random: rng(9) })
    for (const e of busy) for (let k = 0; k < 3; k++) b.begin(e)
    expect(b.inFlight(busy[0] as string)).toBe(3)
    const counts = tally(b, endpoints, 10_000)
    const busyPicks = busy.reduce((a, e) => a + (counts.get(e) ?? 0), 0)
    // a busy endpoint wins only when both samples are busy: (5/10)(4/9) = 22%
    expect(busyPicks / 10_000).toBeGreaterThan(0.17)
    expect(busyPicks / 10_000).toBeLessThan(0.27)
    for (const e of endpoints.slice(5)) expect(counts.get(e) ?? 0).toBeGreaterThan(1200)
  })

  it('steers new requests away from an endpoint whose requests do not finish', () => {
    const endpoints = eps(4)
    const slow = endpoints[0] as string
    const b = new Balancer({ policy: { kind: 'least-request' }, random: rng(11) })
    const counts = new Map<string, number>()
    for (let i = 0; i < 4000; i++) {
      const e = b.pick(endpoints, ctx()) as string
      b.begin(e)
      if (e !== slow) b.end(e) // fast endpoints finish at once
      counts.set(e, (counts.get(e) ?? 0) + 1)
    }
    // the slow endpoint is picked only until it is the busiest of any pair
    expect(counts.get(slow)).toBeLessThanOrEqual(2)
    expect(b.inFlight(slow)).toBe(counts.get(slow))
    for (const e of endpoints.slice(1)) expect(b.inFlight(e)).toBe(0)
  })

  it('never counts below zero on unbalanced end()', () => {
    const b = new Balancer({ policy: { kind: 'least-request' } })
    b.end('10.0.0.1:80')
    expect(b.inFlight('10.0.0.1:80')).toBe(0)
    b.begin('10.0.0.1:80')
    b.begin('10.0.0.1:80')
    b.end('10.0.0.1:80')
    expect(b.inFlight('10.0.0.1:80')).toBe(1)
  })
})

describe('consistent hash (Maglev)', () => {
  const byHeader: Policy = { kind: 'consistent-hash', on: { header: 'x-user' } }
  const bySource: Policy = { kind: 'consistent-hash', on: { sourceIp: true } }

  it('maps the same header value to the same endpoint, across balancers and input orders', () => {
    const endpoints = eps(10)
    const b1 = new Balancer({ policy: byHeader, random: rng(1) })
    const b2 = new Balancer({ policy: byHeader, random: rng(2) })
    const reversed = [...endpoints].reverse()
    for (let u = 0; u < 200; u++) {
      const c = ctx(`192.168.1.${u % 250}`, { 'x-user': `user-${u}` })
      const e = b1.pick(endpoints, c)
      expect(b1.pick(endpoints, c)).toBe(e)
      expect(b2.pick(reversed, ctx('10.9.9.9', { 'x-user': `user-${u}` }))).toBe(e)
    }
  })

  it('maps the same source IP to the same endpoint', () => {
    const endpoints = eps(8)
    const b = new Balancer({ policy: bySource, random: rng(1) })
    const first = new Map<string, string>()
    for (let i = 0; i < 500; i++) first.set(`172.16.${i >> 8}.${i & 255}`, b.pick(endpoints, ctx(`172.16.${i >> 8}.${i & 255}`)) as string)
    for (const [ip, e] of first) expect(b.pick(endpoints, ctx(ip, { 'x-user': 'ignored' }))).toBe(e)
    expect(new Set(first.values()).size).toBe(8)
  })

  it('spreads keys evenly over the endpoints', () => {
    const endpoints = eps(10)
    const b = new Balancer({ policy: byHeader })
    const counts = tally(b, endpoints, 10_000, (i) => ctx('1.1.1.1', { 'x-user': `k${i}` }))
    expect(counts.size).toBe(10)
    for (const v of counts.values()) {
      expect(v).toBeGreaterThan(800)
      expect(v).toBeLessThan(1200)
    }
  })

  it('moves at most ~2/N of keys when one of N endpoints is removed, and restores them when it returns', () => {
    for (const n of [5, 10, 20]) {
      const endpoints = eps(n)
      const b = new Balancer({ policy: byHeader })
      const keys = Array.from({ length: 10_000 }, (_, i) => `session-${i}`)
      const before = keys.map((k) => b.pick(endpoints, ctx('1.1.1.1', { 'x-user': k })))
      const removed = endpoints[n >> 1] as string
      const fewer = endpoints.filter((e) => e !== removed)
      const after = keys.map((k) => b.pick(fewer, ctx('1.1.1.1', { 'x-user': k })))
      let moved = 0
      let movedFromSurvivors = 0
      for (let i = 0; i < keys.length; i++) {
        expect(after[i]).not.toBe(removed)
        if (after[i] !== before[i]) {
          moved++
          if (before[i] !== removed) movedFromSurvivors++
        }
      }
      expect(moved / keys.length).toBeLessThanOrEqual(2 / n)
      expect(moved / keys.length).toBeGreaterThanOrEqual(0.5 / n) // the removed endpoint's keys did move
      expect(movedFromSurvivors / keys.length).toBeLessThan(0.5 / n)
      const back = keys.map((k) => b.pick(endpoints, ctx('1.1.1.1', { 'x-user': k })))
      expect(back).toEqual(before)
    }
  })

  it('falls back to a random endpoint when the header is missing', () => {
    const endpoints = eps(4)
    const b = new Balancer({ policy: byHeader, random: rng(5) })
    const counts = tally(b, endpoints, 4000, () => ({ clientIp: '1.2.3.4' }))
    expect(counts.size).toBe(4)
    for (const v of counts.values()) expect(v).toBeGreaterThan(800)
  })

  it('moves an excluded key to a fixed next endpoint', () => {
    const endpoints = eps(6)
    const b = new Balancer({ policy: byHeader })
    for (let u = 0; u < 100; u++) {
      const c = ctx('1.1.1.1', { 'x-user': `u${u}` })
      const home = b.pick(endpoints, c) as string
      const next = b.pick(endpoints, c, new Set([home]))
      expect(next).toBeDefined()
      expect(next).not.toBe(home)
      expect(b.pick(endpoints, c, new Set([home]))).toBe(next)
    }
  })

  it('hash32 is stable (the mapping must agree across agents and releases)', () => {
    expect(hash32('')).toBe(hash32(''))
    expect(hash32('10.1.0.1:8080', 1)).not.toBe(hash32('10.1.0.1:8080', 2))
    expect(hash32('abc')).toBe(hash32('abc'))
    expect(hash32('abc')).not.toBe(hash32('abd'))
  })
})

describe('sessionAffinity: ClientIP', () => {
  function sticky (policy: Policy = { kind: 'round-robin' }, timeoutSeconds = 10): { b: Balancer, clock: { t: number } } {
    const clock = { t: 1_000_000 }
    const b = new Balancer({ policy, sessionAffinity: 'ClientIP', affinityTimeoutSeconds: timeoutSeconds, now: () => clock.t, random: rng(3) })
    return { b, clock }
  }

  it('sticks to the first choice for repeated picks from one client, on top of round robin', () => {
    const { b } = sticky()
    const endpoints = eps(5)
    const first = b.pick(endpoints, ctx('10.0.0.1'))
    for (let i = 0; i < 100; i++) expect(b.pick(endpoints, ctx('10.0.0.1'))).toBe(first)
    // other clients still rotate
    const others = Array.from({ length: 4 }, (_, i) => b.pick(endpoints, ctx(`10.0.1.${i}`)))
    expect(new Set([first, ...others]).size).toBe(5)
  })

  it('sticks on top of every policy', () => {
    for (const policy of policies) {
      const { b } = sticky(policy)
      const endpoints = eps(7)
      const first = b.pick(endpoints, ctx('10.0.0.9', { 'x-user': 'first' }))
      for (let i = 0; i < 50; i++) expect(b.pick(endpoints, ctx('10.0.0.9', { 'x-user': `other-${i}` }))).toBe(first)
    }
  })

  it('expires after the timeout without use, and is refreshed by use', () => {
    const { b, clock } = sticky({ kind: 'round-robin' }, 10)
    const endpoints = eps(3)
    const first = b.pick(endpoints, ctx('10.0.0.1'))
    // used every 9 s for a minute: still sticky
    for (let i = 0; i < 7; i++) {
      clock.t += 9_000
      expect(b.pick(endpoints, ctx('10.0.0.1'))).toBe(first)
    }
    expect(b.affinityEntries()).toBe(1)
    clock.t += 10_000
    expect(b.affinityEntries()).toBe(0)
    // round robin moves on to the next endpoint once the affinity is gone
    const next = b.pick(endpoints, ctx('10.0.0.1'))
    expect(next).not.toBe(first)
    expect(b.pick(endpoints, ctx('10.0.0.1'))).toBe(next)
  })

  it('falls back to another endpoint when its endpoint disappears, and sticks to that one', () => {
    const { b } = sticky()
    const endpoints = eps(4)
    const first = b.pick(endpoints, ctx('10.0.0.1')) as string
    const remaining = endpoints.filter((e) => e !== first)
    const second = b.pick(remaining, ctx('10.0.0.1'))
    expect(remaining).toContain(second)
    // the old endpoint coming back does not steal the client again
    for (let i = 0; i < 10; i++) expect(b.pick(endpoints, ctx('10.0.0.1'))).toBe(second)
  })

  it('moves on when its endpoint is excluded after a failed dial', () => {
    const { b } = sticky()
    const endpoints = eps(3)
    const first = b.pick(endpoints, ctx('10.0.0.1')) as string
    const retry = b.pick(endpoints, ctx('10.0.0.1'), new Set([first]))
    expect(retry).toBeDefined()
    expect(retry).not.toBe(first)
    expect(b.pick(endpoints, ctx('10.0.0.1'))).toBe(retry)
  })

  it('uses the Kubernetes default of 3 hours when no timeout is given', () => {
    const clock = { t: 0 }
    const b = new Balancer({ sessionAffinity: 'ClientIP', now: () => clock.t, random: rng(1) })
    const endpoints = eps(3)
    const first = b.pick(endpoints, ctx('10.0.0.1'))
    clock.t += 10_799_000
    expect(b.pick(endpoints, ctx('10.0.0.1'))).toBe(first)
    clock.t += 10_800_000
    expect(b.pick(endpoints, ctx('10.0.0.1'))).not.toBe(first)
  })

  it('bounds the remembered clients, dropping the least recently used', () => {
    const clock = { t: 0 }
    const b = new Balancer({ sessionAffinity: 'ClientIP', maxAffinityEntries: 3, now: () => clock.t, random: rng(1) })
    const endpoints = eps(2)
    const a = b.pick(endpoints, ctx('10.0.0.1'))
    b.pick(endpoints, ctx('10.0.0.2'))
    b.pick(endpoints, ctx('10.0.0.3'))
    expect(b.pick(endpoints, ctx('10.0.0.1'))).toBe(a) // refreshes 10.0.0.1
    b.pick(endpoints, ctx('10.0.0.4')) // evicts 10.0.0.2
    expect(b.affinityEntries()).toBe(3)
    expect(b.pick(endpoints, ctx('10.0.0.1'))).toBe(a)
  })

  it('is off with sessionAffinity None, and configure() turns it off', () => {
    const { b } = sticky()
    const endpoints = eps(3)
    b.pick(endpoints, ctx('10.0.0.1'))
    b.configure({ sessionAffinity: 'None' })
    expect(b.affinityEntries()).toBe(0)
    const picks = Array.from({ length: 3 }, () => b.pick(endpoints, ctx('10.0.0.1')))
    expect(new Set(picks).size).toBe(3)
  })
})

describe('exclude', () => {
  it('skips failed endpoints and returns undefined when all are excluded, for every policy', () => {
    for (const policy of policies) {
      const b = new Balancer({ policy, random: rng(4) })
      const endpoints = eps(4)
      const tried = new Set<string>()
      for (let k = 0; k < 4; k++) {
        const e = b.pick(endpoints, ctx('10.0.0.1', { 'x-user': 'u' }), tried)
        expect(e).toBeDefined()
        expect(tried.has(e as string)).toBe(false)
        tried.add(e as string)
      }
      expect(tried).toEqual(new Set(endpoints))
      expect(b.pick(endpoints, ctx('10.0.0.1', { 'x-user': 'u' }), tried)).toBeUndefined()
      expect(b.pick([], ctx())).toBeUndefined()
    }
  })

  it('returns a non-excluded endpoint iff one exists (property)', () => {
    fc.assert(fc.property(
      fc.constantFrom(...policies),
      fc.boolean(),
      fc.uniqueArray(fc.integer({ min: 0, max: 40 }), { maxLength: 12 }),
      fc.array(fc.integer({ min: 0, max: 40 }), { maxLength: 12 }),
      fc.array(fc.tuple(fc.integer({ min: 0, max: 5 }), fc.option(fc.string(), { nil: undefined })), { minLength: 1, maxLength: 10 }),
      fc.integer(),
      (policy, affinity, ids, excludedIds, clients, seed) => {
        const b = new Balancer({ policy, sessionAffinity: affinity ? 'ClientIP' : 'None', random: rng(seed) })
        const endpoints = ids.map((i) => `10.2.0.${i}:80`)
        const exclude = new Set(excludedIds.map((i) => `10.2.0.${i}:80`))
        const allowed = endpoints.filter((e) => !exclude.has(e))
        for (const [client, user] of clients) {
          const e = b.pick(endpoints, ctx(`10.3.0.${client}`, user == null ? {} : { 'x-user': user }), exclude)
          if (allowed.length === 0) expect(e).toBeUndefined()
          else expect(allowed).toContain(e)
        }
      }
    ), { numRuns: 300 })
  })
})

describe('parseDestinationRule', () => {
  const dr = (lb: unknown, extra: Record<string, unknown> = {}): unknown => ({
    apiVersion: 'networking.istio.io/v1',
    kind: 'DestinationRule',
    metadata: { namespace: 'shop', name: 'reviews-lb' },
    spec: { host: 'reviews', trafficPolicy: { loadBalancer: lb }, ...extra }
  })

  it('reads the simple policies, with LEAST_CONN as the old name of LEAST_REQUEST', () => {
    expect(parseDestinationRule(dr({ simple: 'ROUND_ROBIN' }))).toEqual({ namespace: 'shop', name: 'reviews-lb', host: 'reviews', policy: { kind: 'round-robin' } })
    expect(parseDestinationRule(dr({ simple: 'RANDOM' }))?.policy).toEqual({ kind: 'random' })
    expect(parseDestinationRule(dr({ simple: 'LEAST_REQUEST' }))?.policy).toEqual({ kind: 'least-request' })
    expect(parseDestinationRule(dr({ simple: 'LEAST_CONN' }))?.policy).toEqual({ kind: 'least-request' })
  })

  it('reads consistent hashing on a header (lower-cased) or the source IP', () => {
    expect(parseDestinationRule(dr({ consistentHash: { httpHeaderName: 'X-User' } }))?.policy).toEqual({ kind: 'consistent-hash', on: { header: 'x-user' } })
    expect(parseDestinationRule(dr({ consistentHash: { useSourceIp: true } }))?.policy).toEqual({ kind: 'consistent-hash', on: { sourceIp: true } })
    expect(parseDestinationRule(dr({ consistentHash: { httpHeaderName: 'x-user', minimumRingSize: 1024 } }))?.policy).toEqual({ kind: 'consistent-hash', on: { header: 'x-user' } })
  })

  it('normalizes the host and accepts v1beta1/v1alpha3 and list items without kind', () => {
    const obj = { apiVersion: 'networking.istio.io/v1beta1', kind: 'DestinationRule', metadata: { namespace: 'a', name: 'b' }, spec: { host: 'Reviews.Shop.svc.cluster.local.', trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } } }
    expect(parseDestinationRule(obj)?.host).toBe('reviews.shop.svc.cluster.local')
    expect(parseDestinationRule({ metadata: { namespace: 'a', name: 'b' }, spec: { host: 'x', trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } } })?.policy).toEqual({ kind: 'random' })
  })

  it('returns undefined for anything else', () => {
    const cases: unknown[] = [
      undefined, null, 42, 'DestinationRule', [],
      { ...(dr({ simple: 'ROUND_ROBIN' }) as object), kind: 'VirtualService' },
      { ...(dr({ simple: 'ROUND_ROBIN' }) as object), apiVersion: 'v1' },
      dr({ simple: 'PASSTHROUGH' }),
      dr({ simple: 'UNSPECIFIED' }),
      dr({ simple: 'round_robin' }),
      dr({}),
      dr(undefined),
      dr({ simple: 'RANDOM', consistentHash: { useSourceIp: true } }),
      dr({ consistentHash: { httpCookie: { name: 'user', ttl: '0s' } } }),
      dr({ consistentHash: { httpQueryParameterName: 'u' } }),
      dr({ consistentHash: { useSourceIp: false } }),
      dr({ consistentHash: { httpHeaderName: '' } }),
      dr({ consistentHash: { httpHeaderName: 'x', useSourceIp: true } }),
      dr({ consistentHash: {} }),
      { metadata: { namespace: 'shop', name: 'x' }, spec: { host: 'reviews' } },
      { metadata: { namespace: 'shop', name: 'x' }, spec: { trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } } },
      { metadata: { namespace: 'shop', name: 'x' }, spec: { host: '', trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } } },
      { metadata: { namespace: 'shop', name: 'x' }, spec: { host: 7, trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } } }
    ]
    for (const c of cases) expect(parseDestinationRule(c)).toBeUndefined()
  })

  it('never throws on arbitrary JSON', () => {
    fc.assert(fc.property(fc.jsonValue(), (v) => {
      const r = parseDestinationRule(v)
      expect(r === undefined || typeof r.host === 'string').toBe(true)
    }), { numRuns: 300 })
  })
})

describe('matchDestinationRule', () => {
  const rule = (namespace: string, host: string, name = `${namespace}-${host}`): DestinationRuleInfo => ({ namespace, name, host, policy: { kind: 'random' } })
  const svc = { namespace: 'shop', name: 'reviews' }

  it('matches the Kubernetes host forms', () => {
    for (const host of ['reviews.shop', 'reviews.shop.svc', 'reviews.shop.svc.cluster.local']) {
      const r = rule('elsewhere', host)
      expect(matchDestinationRule([r], svc, 'cluster.local')).toBe(r)
    }
    const short = rule('shop', 'reviews')
    expect(matchDestinationRule([short], svc, 'cluster.local')).toBe(short)
    expect(matchDestinationRule([short], svc, 'cluster.local.')).toBe(short)
  })

  it('reads a short name in the rule\'s own namespace', () => {
    expect(matchDestinationRule([rule('other', 'reviews')], svc, 'cluster.local')).toBeUndefined()
    const r = rule('other', 'reviews')
    expect(matchDestinationRule([r], { namespace: 'other', name: 'reviews' }, 'cluster.local')).toBe(r)
  })

  it('does not match other services, namespaces or domains', () => {
    const rules = [
      rule('shop', 'ratings'),
      rule('shop', 'reviews.other'),
      rule('shop', 'reviews.shop.svc.example.org'),
      rule('shop', 'reviews.shop.svc.cluster'),
      rule('shop', 'review'),
      rule('shop', '*.other.svc.cluster.local')
    ]
    expect(matchDestinationRule(rules, svc, 'cluster.local')).toBeUndefined()
    expect(matchDestinationRule([rule('x', 'reviews.shop.svc.corp.example')], svc, 'corp.example')?.host).toBe('reviews.shop.svc.corp.example')
  })

  it('prefers exact hosts over wildcards and the service namespace over others', () => {
    const star = rule('istio-system', '*')
    const nsWild = rule('istio-system', '*.shop.svc.cluster.local')
    const exactElsewhere = rule('istio-system', 'reviews.shop.svc.cluster.local')
    const local = rule('shop', '*.svc.cluster.local')
    expect(matchDestinationRule([star], svc, 'cluster.local')).toBe(star)
    expect(matchDestinationRule([star, nsWild], svc, 'cluster.local')).toBe(nsWild)
    expect(matchDestinationRule([exactElsewhere, nsWild, star], svc, 'cluster.local')).toBe(exactElsewhere)
    expect(matchDestinationRule([exactElsewhere, nsWild, star, local], svc, 'cluster.local')).toBe(local)
    const exactLocal = rule('shop', 'reviews')
    expect(matchDestinationRule([local, exactLocal, exactElsewhere], svc, 'cluster.local')).toBe(exactLocal)
  })

  it('breaks ties by namespace/name, whatever the order', () => {
    const a = rule('x', 'reviews.shop', 'a')
    const b = rule('x', 'reviews.shop.svc', 'b')
    expect(matchDestinationRule([a, b], svc, 'cluster.local')).toBe(a)
    expect(matchDestinationRule([b, a], svc, 'cluster.local')).toBe(a)
  })

  it('works on parsed rules end to end', () => {
    const parsed = parseDestinationRule({
      apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule',
      metadata: { namespace: 'shop', name: 'sticky' },
      spec: { host: 'reviews', trafficPolicy: { loadBalancer: { consistentHash: { useSourceIp: true } } } }
    })
    expect(parsed).toBeDefined()
    const hit = matchDestinationRule([parsed as DestinationRuleInfo], svc, 'cluster.local')
    expect(hit?.policy).toEqual({ kind: 'consistent-hash', on: { sourceIp: true } })
  })
})
