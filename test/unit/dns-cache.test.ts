// The response cache (the hot path for cluster answers): hits are byte-identical to a fresh
// encode of the zone's answer for any ID, flags, spelling, EDNS and DO; size limits pick the
// right shape; multi-address answers rotate; names not ours are remembered; zone changes
// invalidate exactly what they must (checked against a fresh zone with fast-check); bounded.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { toEndpointSlice, toService } from '../../agent/catalog/model.ts'
import { CatalogStore } from '../../agent/catalog/store.ts'
import { CHASE, FORWARD, ResponseCache } from '../../agent/dns/response-cache.ts'
import { CLASS, decodeMessage, encodeQuery, encodeResponse, MAX_MESSAGE, parseQuery, Query, RCODE, TYPE, type QueryOptions } from '../../agent/dns/wire.ts'
import { ClusterZone } from '../../agent/dns/zone.ts'

const svc = (ns: string, name: string, spec: Record<string, unknown>): any => toService({ metadata: { namespace: ns, name, resourceVersion: '1' }, spec })
const slice = (ns: string, name: string, service: string, ips: string[], ports = [{ name: 'http', port: 8080 }]): any => toEndpointSlice({
  metadata: { namespace: ns, name, resourceVersion: '1', labels: { 'kubernetes.io/service-name': service } },
  addressType: 'IPv4',
  ports,
  endpoints: ips.map((ip, i) => ({ addresses: [ip], hostname: `h${i}` }))
})
const ips = (n: number): string[] => Array.from({ length: n }, (_, i) => `10.2.${i >> 8}.${i & 255}`)

function setup (rotate = false): { store: CatalogStore, zone: ClusterZone, cache: ResponseCache } {
  const store = new CatalogStore()
  store.upsert('services', svc('default', 'web', { clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }))
  store.upsert('services', svc('default', 'db', { clusterIP: 'None', ports: [{ name: 'http', port: 80 }] }))
  store.upsert('endpointSlices', slice('default', 'db-a', 'db', ips(3)))
  store.upsert('services', svc('default', 'big', { clusterIP: 'None', ports: [{ name: 'http', port: 80 }] }))
  store.upsert('endpointSlices', slice('default', 'big-a', 'big', ips(50)))
  store.upsert('services', svc('default', 'ext', { type: 'ExternalName', externalName: 'www.example.com' }))
  const zone = ClusterZone.fromSnapshot(store.commit()!.snapshot)
  const cache = new ResponseCache({ rotate })
  cache.follow(zone)
  return { store, zone, cache }
}

const parse = (o: QueryOptions): Query => {
  const q = parseQuery(encodeQuery(o))
  if (!(q instanceof Query)) throw new Error('bad query')
  return q
}
const out = Buffer.alloc(MAX_MESSAGE)
const answer = (cache: ResponseCache, zone: ClusterZone, q: Query, max = q.maxUdp): Buffer | number => {
  const n = cache.answerInto(zone, q, out, max)
  return n > 0 ? Buffer.from(out.subarray(0, n)) : n
}
/** What the server should send: the zone's answer, encoded fresh for this very query. */
const fresh = (zone: ClusterZone, q: Query, max = q.maxUdp): Buffer => encodeResponse(q, zone.lookup(q.qname, q.qtype)!, { maxSize: max })

const withoutSerial = (b: Buffer): unknown => JSON.stringify(decodeMessage(b), (k, v) => k === 'serial' ? undefined : v)

describe('ResponseCache', () => {
  it('misses, stores from the zone, then hits with the query ID, flags, spelling, EDNS and DO patched in', () => {
    const { zone, cache } = setup()
    const first = parse({ id: 1, name: 'web.default.svc.cluster.local', type: TYPE.A })
    expect(cache.respondInto(first, out)).toBe(0)
    expect(answer(cache, zone, first)).toEqual(fresh(zone, first))
    expect(cache.size).toBe(1)
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffff }), fc.boolean(), fc.boolean(), fc.boolean(), fc.array(fc.boolean(), { minLength: 29, maxLength: 29 }), (id, rd, cd, dnssec, upper) => {
      const name = [...'web.default.svc.cluster.local'].map((c, i) => upper[i] === true ? c.toUpperCase() : c).join('')
      const q = parse({ id, name, type: TYPE.A, rd, cd, edns: { udpSize: 1232, do: dnssec } })
      const got = answer(cache, zone, q)
      expect(got).toEqual(fresh(zone, q))
      const m = decodeMessage(got as Buffer)!
      expect([m.id, m.rd, m.cd, m.opt?.do, m.questions[0]!.name, m.answers[0]!.name]).toEqual([id, rd, cd, dnssec, name, name])
    }), { numRuns: 500 })
    expect(cache.size).toBe(2) // with and without EDNS
    expect(cache.stats.hits).toBeGreaterThanOrEqual(499)
  })

  it('serves NXDOMAIN and NODATA from the cache too', () => {
    const { zone, cache } = setup()
    for (const name of ['nope.default.svc.cluster.local', 'default.svc.cluster.local', 'google.com.default.svc.cluster.local']) {
      const q = parse({ id: 3, name, type: TYPE.A, rd: true })
      expect(answer(cache, zone, q)).toEqual(fresh(zone, q))
      expect(cache.respondInto(q, out)).toBeGreaterThan(0)
    }
  })

  it('picks full, without-additional or TC by the size limit, like encodeResponse', () => {
    const { zone, cache } = setup()
    const plain = parse({ id: 1, name: 'big.default.svc.cluster.local', type: TYPE.A }) // 50 A records: ~850 bytes
    const edns = parse({ id: 1, name: 'big.default.svc.cluster.local', type: TYPE.A, edns: { udpSize: 4096 } })
    for (const [q, max] of [[plain, 512], [plain, MAX_MESSAGE], [edns, 1232], [edns, MAX_MESSAGE], [edns, 512]] as const) {
      const got = answer(cache, zone, q, max)
      expect(got).toEqual(fresh(zone, q, max))
    }
    expect(decodeMessage(answer(cache, zone, plain) as Buffer)!.tc).toBe(true)
    expect(decodeMessage(answer(cache, zone, edns) as Buffer)!.answers).toHaveLength(50)
    // SRV with additional records: the middle shape
    const srv = parse({ id: 9, name: '_http._tcp.big.default.svc.cluster.local', type: TYPE.SRV, edns: {} })
    const full = fresh(zone, srv, MAX_MESSAGE)
    const r = zone.lookup(srv.qname, srv.qtype)!
    const noAdd = encodeResponse(srv, { ...r, additional: [] }, { maxSize: MAX_MESSAGE })
    for (const max of [512, noAdd.length, noAdd.length - 1, full.length - 1, full.length, MAX_MESSAGE]) {
      if (max < 512) continue
      expect(answer(cache, zone, srv, max)).toEqual(fresh(zone, srv, max))
    }
  })

  it('rotates multi-address answers per hit (round robin), every rotation a valid response', () => {
    const { zone, cache } = setup(true)
    const q = parse({ id: 1, name: 'db.default.svc.cluster.local', type: TYPE.A, edns: {} })
    const seen: string[][] = []
    for (let i = 0; i < 6; i++) {
      const m = decodeMessage(answer(cache, zone, q) as Buffer)!
      expect(m.opt).toBeDefined()
      seen.push(m.answers.map((a) => a.data as string))
    }
    expect(seen.slice(0, 3)).toEqual([['10.2.0.0', '10.2.0.1', '10.2.0.2'], ['10.2.0.1', '10.2.0.2', '10.2.0.0'], ['10.2.0.2', '10.2.0.0', '10.2.0.1']])
    expect(seen.slice(3)).toEqual(seen.slice(0, 3))
    // SRV answers (targets referenced by additional records) never rotate
    const srv = parse({ id: 1, name: '_http._tcp.db.default.svc.cluster.local', type: TYPE.SRV })
    expect(answer(cache, zone, srv)).toEqual(answer(cache, zone, srv))
  })

  it('remembers names that are not ours; other classes: REFUSED in the zone, forwarded outside', () => {
    const { zone, cache } = setup()
    const q = parse({ id: 1, name: 'example.com', type: TYPE.A, rd: true })
    expect(answer(cache, zone, q)).toBe(FORWARD)
    expect(cache.respondInto(q, out)).toBe(FORWARD)
    expect(cache.respond(q)).toBe(FORWARD)
    expect(answer(cache, zone, parse({ id: 1, name: '9.9.9.9.in-addr.arpa', type: TYPE.PTR }))).toBe(FORWARD)
    const ch = parse({ id: 1, name: 'web.default.svc.cluster.local', type: TYPE.TXT, class: CLASS.CH })
    expect(decodeMessage(answer(cache, zone, ch) as Buffer)!.rcode).toBe(RCODE.REFUSED)
    expect(answer(cache, zone, parse({ id: 1, name: 'version.bind', type: TYPE.TXT, class: CLASS.CH }))).toBe(FORWARD)
  })

  it('ExternalName leaving the zone: CHASE, not cached', () => {
    const { zone, cache } = setup()
    const q = parse({ id: 1, name: 'ext.default.svc.cluster.local', type: TYPE.A })
    expect(answer(cache, zone, q)).toBe(CHASE)
    expect(cache.size).toBe(0)
    expect(zone.lookup(q.qname, q.qtype)!.chase).toBe('www.example.com')
  })

  it('answers queries with a compressed question without caching them', () => {
    const { zone, cache } = setup()
    // question "\0a" via a pointer into its own label (legal, odd): NXDOMAIN-less, not ours
    const odd = parseQuery(Buffer.from('000100000001000000000000' + '020061c00d' + '00010001', 'hex')) as Query
    expect(odd.compressed).toBe(true)
    expect(answer(cache, zone, odd)).toBe(FORWARD)
    expect(cache.size).toBe(0)
  })

  it('zone changes invalidate the affected names: a new Service replaces a cached NXDOMAIN', () => {
    const { store, zone, cache } = setup()
    const q = parse({ id: 1, name: 'new.default.svc.cluster.local', type: TYPE.A })
    expect(decodeMessage(answer(cache, zone, q) as Buffer)!.rcode).toBe(RCODE.NXDOMAIN)
    const web = parse({ id: 1, name: 'web.default.svc.cluster.local', type: TYPE.A })
    answer(cache, zone, web)
    store.upsert('services', svc('default', 'new', { clusterIP: '10.96.0.99' }))
    const c = store.commit()!
    zone.apply(c.snapshot, c.changes)
    expect(cache.respondInto(q, out)).toBe(0) // dropped
    expect(cache.respondInto(web, out)).toBeGreaterThan(0) // untouched
    expect(decodeMessage(answer(cache, zone, q) as Buffer)!.answers.map((a) => a.data)).toEqual(['10.96.0.99'])
  })

  it('stays coherent with the zone under random catalog changes (fast-check)', () => {
    const names = ['a', 'b', 'c']
    const qnames = ['a.ns.svc.cluster.local', 'b.ns.svc.cluster.local', 'c.ns.svc.cluster.local', 'ns.svc.cluster.local', '_http._tcp.a.ns.svc.cluster.local', '_tcp.b.ns.svc.cluster.local', 'h0.c.ns.svc.cluster.local', '1.0.96.10.in-addr.arpa', '0.0.1.10.in-addr.arpa', 'x.ns.svc.cluster.local']
    const op = fc.record({ svc: fc.nat(2), kind: fc.constantFrom('ip', 'headless', 'ext', 'delete', 'slice'), ip: fc.nat(2), eps: fc.nat(3) })
    fc.assert(fc.property(fc.array(op, { minLength: 1, maxLength: 25 }), fc.array(fc.tuple(fc.nat(qnames.length - 1), fc.constantFrom(TYPE.A, TYPE.SRV, TYPE.PTR, TYPE.AAAA), fc.boolean()), { minLength: 5, maxLength: 20 }), (ops, queries) => {
      const store = new CatalogStore()
      const zone = new ClusterZone()
      const cache = new ResponseCache({ maxEntries: 8, rotate: false })
      cache.follow(zone)
      for (const o of ops) {
        const name = names[o.svc]!
        if (o.kind === 'delete') store.remove('services', `ns/${name}`)
        else if (o.kind === 'slice') store.upsert('endpointSlices', slice('ns', `${name}-a`, name, Array.from({ length: o.eps }, (_, i) => `10.1.0.${i}`)))
        else if (o.kind === 'ext') store.upsert('services', svc('ns', name, { type: 'ExternalName', externalName: `${names[(o.svc + 1) % 3]!}.ns.svc.cluster.local` }))
        else store.upsert('services', svc('ns', name, { clusterIP: o.kind === 'headless' ? 'None' : `10.96.0.${o.ip}`, ports: [{ name: 'http', port: 80 }] }))
        const c = store.commit()
        if (c != null) zone.apply(c.snapshot, c.changes)
        for (const [i, type, edns] of queries) {
          const q = parse({ id: i, name: qnames[i]!, type, edns: edns ? {} : undefined })
          const got = answer(cache, zone, q, MAX_MESSAGE)
          const want = zone.lookup(q.qname, q.qtype)
          if (want === undefined) expect(got).toBe(FORWARD)
          else if (want.chase !== undefined) expect(got).toBe(CHASE)
          // byte for byte, but for the SOA serial of negative answers: that is the snapshot version
          // when the answer was cached (a change elsewhere does not drop it; nothing reads it)
          else expect(withoutSerial(got as Buffer)).toEqual(withoutSerial(encodeResponse(q, want, { maxSize: MAX_MESSAGE })))
        }
        expect(cache.size).toBeLessThanOrEqual(8)
      }
    }), { numRuns: 150 })
  })

  it('is bounded: CLOCK eviction keeps recently hit entries', () => {
    const { zone } = setup()
    const cache = new ResponseCache({ maxEntries: 4 })
    const q = (i: number): Query => parse({ id: 1, name: `n${i}.default.svc.cluster.local`, type: TYPE.A })
    for (let i = 0; i < 4; i++) answer(cache, zone, q(i))
    expect(cache.size).toBe(4)
    answer(cache, zone, q(0)) // a hit: n0 gets a second chance
    for (let i = 4; i < 7; i++) answer(cache, zone, q(i))
    expect(cache.size).toBe(4)
    expect(cache.respondInto(q(0), out)).toBeGreaterThan(0)
    expect(cache.stats.evictions).toBe(3)
    expect(cache.invalidate(['n0.default.svc.cluster.local', 'nothing'])).toBe(1)
    expect(cache.size).toBe(3)
    cache.clear()
    expect([cache.size, cache.respondInto(q(5), out)]).toEqual([0, 0])
    for (let i = 0; i < 20; i++) answer(cache, zone, q(i))
    expect(cache.size).toBe(4)
  })
})
