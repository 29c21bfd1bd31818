// The cluster zone: every record kind of the Kubernetes DNS spec from a synthetic catalog
// snapshot, NXDOMAIN vs NODATA, reverse names, pods, ExternalName chains, a custom domain, and
// incremental apply() checked against full rebuilds (fast-check), including that the reported
// names cover every answer that changed.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { toEndpointSlice, toService } from '../../agent/catalog/model.ts'
import { CatalogStore, type CatalogSnapshot } from '../../agent/catalog/store.ts'
import { RCODE, TYPE, type RR } from '../../agent/dns/wire.ts'
import { ClusterZone, SCHEMA_VERSION, type ZoneResult } from '../../agent/dns/zone.ts'

const svcObj = (ns: string, name: string, spec: Record<string, unknown>): any => ({ metadata: { namespace: ns, name, resourceVersion: '1' }, spec })
interface Ep { ip: string | string[], host?: string, ready?: boolean }
const sliceObj = (ns: string, name: string, svc: string, eps: Ep[], ports: Array<{ name?: string, port: number, protocol?: string }> = [{ name: 'http', port: 8080 }], addressType = 'IPv4'): any => ({
  metadata: { namespace: ns, name, resourceVersion: '1', labels: { 'kubernetes.io/service-name': svc } },
  addressType,
  ports,
  endpoints: eps.map((e) => ({ addresses: Array.isArray(e.ip) ? e.ip : [e.ip], hostname: e.host, conditions: { ready: e.ready ?? true } }))
})

function catalog (build: (s: CatalogStore) => void): CatalogSnapshot {
  const s = new CatalogStore()
  build(s)
  return s.commit()!.snapshot
}
const addSvc = (s: CatalogStore, ns: string, name: string, spec: Record<string, unknown>): void => { s.upsert('services', toService(svcObj(ns, name, spec))!) }
const addSlice = (s: CatalogStore, ...args: Parameters<typeof sliceObj>): void => { s.upsert('endpointSlices', toEndpointSlice(sliceObj(...args))!) }

function standard (s: CatalogStore): void {
  addSvc(s, 'default', 'kubernetes', { clusterIP: '10.96.0.1', ports: [{ name: 'https', port: 443 }] })
  addSvc(s, 'default', 'web', { clusterIPs: ['10.96.0.10', 'fd00::10'], ports: [{ name: 'http', port: 80 }, { name: 'metrics', port: 9090, protocol: 'UDP' }, { port: 81 }] })
  addSlice(s, 'default', 'web-a', 'web', [{ ip: '10.1.0.1' }])
  addSvc(s, 'db', 'pg', { clusterIP: 'None', ports: [{ name: 'pg', port: 5432 }] })
  addSlice(s, 'db', 'pg-a', 'pg', [{ ip: '10.1.0.2', host: 'pg-0' }, { ip: '10.1.0.3' }, { ip: '10.1.0.4', host: 'pg-2', ready: false }], [{ name: 'pg', port: 5432 }, { port: 9187 }])
  addSlice(s, 'db', 'pg-b', 'pg', [{ ip: 'fd00::5', host: 'pg-0' }], [{ name: 'pg', port: 5432 }], 'IPv6')
  addSvc(s, 'db', 'empty', { clusterIP: 'None', ports: [{ name: 'pg', port: 5432 }] })
  addSlice(s, 'db', 'empty-a', 'empty', [{ ip: '10.1.0.9', ready: false }])
  addSvc(s, 'db', 'tolerant', { clusterIP: 'None', publishNotReadyAddresses: true })
  addSlice(s, 'db', 'tolerant-a', 'tolerant', [{ ip: '10.1.0.10', ready: false, host: 'warm' }])
  addSvc(s, 'default', 'ext', { type: 'ExternalName', externalName: 'WWW.Example.COM.' })
  addSvc(s, 'default', 'alias', { type: 'ExternalName', externalName: 'web.default.svc.cluster.local' })
}

const zoneOf = (build: (s: CatalogStore) => void = standard, opts = {}): ClusterZone => ClusterZone.fromSnapshot(catalog(build), opts)
const look = (z: ClusterZone, name: string, type: number): ZoneResult => {
  const r = z.lookup(name, type)
  if (r === undefined) throw new Error(`${name} is not ours`)
  return r
}
const data = (rrs: RR[]): unknown[] => rrs.map((r) => r.data)
const names = (rrs: RR[]): string[] => rrs.map((r) => r.name)

describe('cluster zone records', () => {
  const z = zoneOf()

  it('ClusterIP Services: A and AAAA by family, TTL 5, authoritative', () => {
    const a = look(z, 'web.default.svc.cluster.local', TYPE.A)
    expect(a).toEqual({ rcode: 0, aa: true, answers: [{ name: 'web.default.svc.cluster.local', type: TYPE.A, ttl: 5, data: '10.96.0.10' }], authority: [], additional: [], chase: undefined })
    expect(data(look(z, 'web.default.svc.cluster.local', TYPE.AAAA).answers)).toEqual(['fd00::10'])
    expect(data(look(z, 'kubernetes.default.svc.cluster.local', TYPE.A).answers)).toEqual(['10.96.0.1'])
  })

  it('SRV for named ports only, targeting the Service, with its addresses as additional records', () => {
    const r = look(z, '_http._tcp.web.default.svc.cluster.local', TYPE.SRV)
    expect(data(r.answers)).toEqual([{ priority: 0, weight: 100, port: 80, target: 'web.default.svc.cluster.local' }])
    expect(r.additional.map((x) => [x.name, x.type, x.data])).toEqual([['web.default.svc.cluster.local', TYPE.A, '10.96.0.10'], ['web.default.svc.cluster.local', TYPE.AAAA, 'fd00::10']])
    expect(data(look(z, '_metrics._udp.web.default.svc.cluster.local', TYPE.SRV).answers)).toEqual([{ priority: 0, weight: 100, port: 9090, target: 'web.default.svc.cluster.local' }])
    expect(look(z, '_metrics._tcp.web.default.svc.cluster.local', TYPE.SRV).rcode).toBe(RCODE.NXDOMAIN) // wrong protocol
    expect(look(z, '_https._tcp.kubernetes.default.svc.cluster.local', TYPE.SRV).answers).toHaveLength(1)
  })

  it('PTR for ClusterIPs, IPv4 and IPv6', () => {
    expect(data(look(z, '10.0.96.10.in-addr.arpa', TYPE.PTR).answers)).toEqual(['web.default.svc.cluster.local'])
    const v6 = '0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa'
    expect(data(look(z, v6, TYPE.PTR).answers)).toEqual(['web.default.svc.cluster.local'])
    const nodata = look(z, '10.0.96.10.in-addr.arpa', TYPE.A)
    expect([nodata.rcode, nodata.answers, names(nodata.authority)]).toEqual([0, [], ['in-addr.arpa']])
  })

  it('headless: ready endpoint addresses, hostnames (explicit or dashed), not-ready left out', () => {
    expect(data(look(z, 'pg.db.svc.cluster.local', TYPE.A).answers)).toEqual(['10.1.0.2', '10.1.0.3'])
    expect(data(look(z, 'pg.db.svc.cluster.local', TYPE.AAAA).answers)).toEqual(['fd00::5'])
    expect(data(look(z, 'pg-0.pg.db.svc.cluster.local', TYPE.A).answers)).toEqual(['10.1.0.2'])
    expect(data(look(z, 'pg-0.pg.db.svc.cluster.local', TYPE.AAAA).answers)).toEqual(['fd00::5'])
    expect(data(look(z, '10-1-0-3.pg.db.svc.cluster.local', TYPE.A).answers)).toEqual(['10.1.0.3'])
    expect(look(z, 'pg-2.pg.db.svc.cluster.local', TYPE.A).rcode).toBe(RCODE.NXDOMAIN)
    expect(look(z, '10-1-0-2.pg.db.svc.cluster.local', TYPE.A).rcode).toBe(RCODE.NXDOMAIN) // it has a hostname
  })

  it('headless SRV: one per ready endpoint and named port, the endpoint port, targets resolved in additional', () => {
    const r = look(z, '_pg._tcp.pg.db.svc.cluster.local', TYPE.SRV)
    expect(data(r.answers)).toEqual([
      { priority: 0, weight: 100, port: 5432, target: '10-1-0-3.pg.db.svc.cluster.local' },
      { priority: 0, weight: 100, port: 5432, target: 'pg-0.pg.db.svc.cluster.local' }
    ])
    expect(r.additional.map((x) => [x.name, x.data])).toEqual([
      ['10-1-0-3.pg.db.svc.cluster.local', '10.1.0.3'],
      ['pg-0.pg.db.svc.cluster.local', '10.1.0.2'],
      ['pg-0.pg.db.svc.cluster.local', 'fd00::5']
    ])
    // the unnamed port 9187 has none
    expect(look(z, '_._tcp.pg.db.svc.cluster.local', TYPE.SRV).rcode).toBe(RCODE.NXDOMAIN)
  })

  it('headless PTR for every ready endpoint, to its hostname', () => {
    expect(data(look(z, '2.0.1.10.in-addr.arpa', TYPE.PTR).answers)).toEqual(['pg-0.pg.db.svc.cluster.local'])
    expect(data(look(z, '3.0.1.10.in-addr.arpa', TYPE.PTR).answers)).toEqual(['10-1-0-3.pg.db.svc.cluster.local'])
    expect(z.lookup('4.0.1.10.in-addr.arpa', TYPE.PTR)).toBeUndefined() // not ready: not ours, forwarded
  })

  it('headless without ready endpoints: NXDOMAIN for the Service and everything below it', () => {
    for (const n of ['empty.db.svc.cluster.local', '_pg._tcp.empty.db.svc.cluster.local', '_tcp.empty.db.svc.cluster.local']) {
      const r = look(z, n, TYPE.A)
      expect([r.rcode, r.answers, r.authority.map((x) => x.type)]).toEqual([RCODE.NXDOMAIN, [], [TYPE.SOA]])
    }
    // publishNotReadyAddresses: not-ready endpoints count
    expect(data(look(z, 'tolerant.db.svc.cluster.local', TYPE.A).answers)).toEqual(['10.1.0.10'])
    expect(data(look(z, 'warm.tolerant.db.svc.cluster.local', TYPE.A).answers)).toEqual(['10.1.0.10'])
  })

  it('ExternalName: a CNAME (normalized), chased by the server when it leaves the zone', () => {
    const r = look(z, 'ext.default.svc.cluster.local', TYPE.A)
    expect([r.rcode, r.answers, r.chase]).toEqual([0, [{ name: 'ext.default.svc.cluster.local', type: TYPE.CNAME, ttl: 5, data: 'www.example.com' }], 'www.example.com'])
    expect(look(z, 'ext.default.svc.cluster.local', TYPE.CNAME).chase).toBeUndefined()
    expect(look(z, 'ext.default.svc.cluster.local', TYPE.ANY).answers).toHaveLength(1)
  })

  it('ExternalName into the zone: the chain is followed here', () => {
    const r = look(z, 'alias.default.svc.cluster.local', TYPE.A)
    expect([r.chase, r.answers.map((x) => [x.type, x.data])]).toEqual([undefined, [[TYPE.CNAME, 'web.default.svc.cluster.local'], [TYPE.A, '10.96.0.10']]])
  })

  it('pod names for any namespace, IPv4 and dashed IPv6', () => {
    expect(data(look(z, '10-244-1-7.anything.pod.cluster.local', TYPE.A).answers)).toEqual(['10.244.1.7'])
    expect(data(look(z, 'fd00--7.x.pod.cluster.local', TYPE.AAAA).answers)).toEqual(['fd00::7'])
    expect(look(z, '10-244-1-7.x.pod.cluster.local', TYPE.AAAA)).toMatchObject({ rcode: 0, answers: [] })
    expect(look(z, '10-244-1-777.x.pod.cluster.local', TYPE.A).rcode).toBe(RCODE.NXDOMAIN)
    expect(look(z, 'a.10-244-1-7.x.pod.cluster.local', TYPE.A).rcode).toBe(RCODE.NXDOMAIN)
    expect(look(z, 'x.pod.cluster.local', TYPE.A)).toMatchObject({ rcode: 0, answers: [] })
  })

  it('dns-version TXT and the apex SOA', () => {
    expect(look(z, 'dns-version.cluster.local', TYPE.TXT).answers).toEqual([{ name: 'dns-version.cluster.local', type: TYPE.TXT, ttl: 5, data: [SCHEMA_VERSION] }])
    expect(SCHEMA_VERSION).toBe('1.1.0')
    const soa = look(z, 'cluster.local', TYPE.SOA).answers[0]!
    expect(soa).toEqual({ name: 'cluster.local', type: TYPE.SOA, ttl: 5, data: { mname: 'ns.dns.cluster.local', rname: 'hostmaster.cluster.local', serial: 1, refresh: 7200, retry: 1800, expire: 86400, minimum: 5 } })
    expect(look(z, 'cluster.local', TYPE.A)).toMatchObject({ rcode: 0, answers: [] })
  })

  it('NODATA for other types and empty non-terminals; NXDOMAIN for the rest; SOA in both', () => {
    const nodata = (n: string, t: number = TYPE.A): void => {
      const r = look(z, n, t)
      expect([n, r.rcode, r.answers.length, r.authority.map((x) => [x.name, x.type])]).toEqual([n, 0, 0, [['cluster.local', TYPE.SOA]]])
    }
    const nx = (n: string): void => {
      const r = look(z, n, TYPE.A)
      expect([n, r.rcode, r.answers.length, r.authority.map((x) => [x.name, x.type])]).toEqual([n, RCODE.NXDOMAIN, 0, [['cluster.local', TYPE.SOA]]])
    }
    nodata('web.default.svc.cluster.local', TYPE.TXT)
    nodata('web.default.svc.cluster.local', TYPE.PTR)
    nodata('kubernetes.default.svc.cluster.local', TYPE.AAAA)
    nodata('dns-version.cluster.local', TYPE.A)
    for (const ent of ['svc.cluster.local', 'pod.cluster.local', 'default.svc.cluster.local', 'db.svc.cluster.local', '_tcp.web.default.svc.cluster.local', '_udp.web.default.svc.cluster.local', '_tcp.pg.db.svc.cluster.local']) nodata(ent)
    for (const n of ['nope.default.svc.cluster.local', 'nosuchns.svc.cluster.local', 'web.default.svc.cluster.local.default.svc.cluster.local', 'x.cluster.local', 'a.b.web.default.svc.cluster.local', '_http._udp.web.default.svc.cluster.local', 'ns.dns.cluster.local']) nx(n)
  })

  it('qtype ANY returns every record of the name', () => {
    expect(look(z, 'web.default.svc.cluster.local', TYPE.ANY).answers.map((x) => x.type)).toEqual([TYPE.A, TYPE.AAAA])
    expect(look(z, 'dns-version.cluster.local', TYPE.ANY).answers.map((x) => x.type)).toEqual([TYPE.TXT])
  })

  it('names outside the zone, and reverse names we hold no PTR for, are not ours', () => {
    for (const n of ['example.com', 'local', 'cluster.local.example.com', 'xcluster.local', '9.9.9.9.in-addr.arpa', '0.96.10.in-addr.arpa', 'in-addr.arpa', '']) {
      expect([n, z.lookup(n, TYPE.A), z.lookup(n, TYPE.PTR)]).toEqual([n, undefined, undefined])
    }
    expect(z.isAuthoritative('x.cluster.local')).toBe(true)
    expect(z.isAuthoritative('10.0.96.10.in-addr.arpa')).toBe(true)
    expect(z.isAuthoritative('9.9.9.9.in-addr.arpa')).toBe(false)
  })

  it('a custom cluster domain and TTL', () => {
    const c = zoneOf(standard, { domain: 'Edge.Example.', ttl: 30 })
    expect(c.domain).toBe('edge.example')
    expect(look(c, 'web.default.svc.edge.example', TYPE.A).answers[0]).toMatchObject({ ttl: 30, data: '10.96.0.10' })
    expect(data(look(c, '10.0.96.10.in-addr.arpa', TYPE.PTR).answers)).toEqual(['web.default.svc.edge.example'])
    expect(c.lookup('web.default.svc.cluster.local', TYPE.A)).toBeUndefined()
    expect(look(c, 'x.edge.example', TYPE.A).authority[0]).toMatchObject({ name: 'edge.example', data: { mname: 'ns.dns.edge.example', minimum: 30 } })
    expect(() => new ClusterZone({ domain: 'a..b' })).toThrow()
    expect(() => new ClusterZone({ ttl: -1 })).toThrow()
  })

  it('odd catalog data is skipped, not served', () => {
    const odd = zoneOf((s) => {
      addSvc(s, 'default', 'bad-ips', { clusterIPs: ['10.96.0.300', 'banana', '10.96.0.20'] })
      addSvc(s, 'default', 'h', { clusterIP: 'None' })
      addSlice(s, 'default', 'h-a', 'h', [{ ip: 'nope', host: 'x' }, { ip: '10.0.0.1', host: 'Bad.Host' }, { ip: '10.0.0.2', host: 'UPPER' }])
      addSlice(s, 'default', 'h-f', 'h', [{ ip: 'example.com' }], [], 'FQDN')
      addSvc(s, 'default', 'ext-bad', { type: 'ExternalName', externalName: 'a..b' })
    })
    expect(data(look(odd, 'bad-ips.default.svc.cluster.local', TYPE.A).answers)).toEqual(['10.96.0.20'])
    expect(data(look(odd, 'h.default.svc.cluster.local', TYPE.A).answers)).toEqual(['10.0.0.1', '10.0.0.2'])
    expect(data(look(odd, '10-0-0-1.h.default.svc.cluster.local', TYPE.A).answers)).toEqual(['10.0.0.1']) // invalid hostname: dashed
    expect(data(look(odd, 'upper.h.default.svc.cluster.local', TYPE.A).answers)).toEqual(['10.0.0.2'])
    expect(look(odd, 'ext-bad.default.svc.cluster.local', TYPE.A)).toMatchObject({ rcode: 0, answers: [], chase: undefined })
  })
})

// ---- incremental ------------------------------------------------------------------------------

const NS = ['a', 'b']
const SVC = ['s1', 's2', 's3']
type Op =
  | { op: 'svc', ns: number, name: number, kind: 'ip' | 'headless' | 'ext', ip: number, ports: number, pnr: boolean, target: number }
  | { op: 'delsvc', ns: number, name: number }
  | { op: 'slice', ns: number, name: number, slice: number, eps: Array<{ ip: number, host: number, ready: boolean }>, named: boolean, v6: boolean }
  | { op: 'delslice', ns: number, name: number, slice: number }

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('svc' as const), ns: fc.nat(1), name: fc.nat(2), kind: fc.constantFrom('ip' as const, 'headless' as const, 'ext' as const), ip: fc.nat(3), ports: fc.nat(3), pnr: fc.boolean(), target: fc.nat(3) }),
  fc.record({ op: fc.constant('delsvc' as const), ns: fc.nat(1), name: fc.nat(2) }),
  fc.record({ op: fc.constant('slice' as const), ns: fc.nat(1), name: fc.nat(2), slice: fc.nat(1), eps: fc.array(fc.record({ ip: fc.nat(5), host: fc.nat(2), ready: fc.boolean() }), { maxLength: 4 }), named: fc.boolean(), v6: fc.boolean() }),
  fc.record({ op: fc.constant('delslice' as const), ns: fc.nat(1), name: fc.nat(2), slice: fc.nat(1) })
)

function applyOp (s: CatalogStore, o: Op): void {
  const ns = NS[o.ns]!
  const name = SVC[o.name]!
  switch (o.op) {
    case 'svc': {
      const ports = [{ name: 'http', port: 80 }, { name: 'dns', port: 53, protocol: 'UDP' }, { port: 81 }].slice(0, o.ports)
      const targets = ['www.example.com', `s1.${ns}.svc.cluster.local`, `s2.a.svc.cluster.local`, `_http._tcp.s3.b.svc.cluster.local`]
      const spec = o.kind === 'ext'
        ? { type: 'ExternalName', externalName: targets[o.target] }
        : { clusterIP: o.kind === 'headless' ? 'None' : `10.96.${o.ns}.${o.ip}`, ports, publishNotReadyAddresses: o.pnr }
      s.upsert('services', toService({ metadata: { namespace: ns, name, resourceVersion: String(Math.random()) }, spec })!)
      break
    }
    case 'delsvc': s.remove('services', `${ns}/${name}`); break
    case 'slice': {
      const eps = o.eps.map((e) => ({ ip: o.v6 ? `fd00::${e.ip + 1}` : `10.1.0.${e.ip + 1}`, host: e.host === 0 ? undefined : `h${e.host}`, ready: e.ready }))
      s.upsert('endpointSlices', toEndpointSlice(sliceObj(ns, `${name}-${o.slice}`, name, eps, o.named ? [{ name: 'http', port: 8080 }] : [{ port: 8080 }], o.v6 ? 'IPv6' : 'IPv4'))!)
      break
    }
    case 'delslice': s.remove('endpointSlices', `${ns}/${name}-${o.slice}`); break
  }
}

const QTYPES = [TYPE.A, TYPE.AAAA, TYPE.SRV, TYPE.PTR, TYPE.CNAME, TYPE.TXT, TYPE.ANY]
function probeNames (...zones: ClusterZone[]): Set<string> {
  const out = new Set<string>()
  for (const z of zones) for (const n of z.names()) out.add(n)
  for (const ns of NS) {
    out.add(`${ns}.svc.cluster.local`)
    for (const s of SVC) {
      const base = `${s}.${ns}.svc.cluster.local`
      for (const p of [base, `_tcp.${base}`, `_http._tcp.${base}`, `_dns._udp.${base}`, `h1.${base}`, `10-1-0-1.${base}`, `fd00--1.${base}`]) out.add(p)
    }
  }
  for (let i = 1; i <= 6; i++) { out.add(`${i}.0.1.10.in-addr.arpa`); out.add(`1.0.0.10.in-addr.arpa`) }
  return out
}
/** a lookup without the SOA serial (which follows the snapshot version, not the records) */
function view (z: ClusterZone, n: string, t: number): string {
  return JSON.stringify(z.lookup(n, t), (k, v) => k === 'serial' ? undefined : v)
}

describe('incremental apply', () => {
  it('equals a full rebuild after any sequence of Service/EndpointSlice changes, and reports every changed name', () => {
    fc.assert(fc.property(fc.array(fc.array(opArb, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 12 }), (batches) => {
      const store = new CatalogStore()
      const inc = new ClusterZone()
      let reported: ReadonlySet<string> = new Set()
      inc.onChanged((c) => { reported = c.names })
      for (const batch of batches) {
        const before = new Map<string, string>()
        const probes = probeNames(inc)
        for (const n of probes) for (const t of QTYPES) before.set(`${n}|${t}`, view(inc, n, t))
        for (const o of batch) applyOp(store, o)
        const c = store.commit()
        if (c == null) continue
        reported = new Set()
        const gen = inc.generation
        const change = inc.apply(c.snapshot, c.changes)
        expect(change.names).toBe(reported.size > 0 ? reported : change.names)
        const full = ClusterZone.fromSnapshot(c.snapshot)
        const all = probeNames(inc, full)
        for (const n of probes) all.add(n)
        expect([...inc.names()].sort()).toEqual([...full.names()].sort())
        for (const n of all) {
          for (const t of QTYPES) {
            const now = view(inc, n, t)
            expect([n, t, now]).toEqual([n, t, view(full, n, t)])
            const was = before.get(`${n}|${t}`)
            if (was !== undefined && was !== now) expect([n, t, change.names.has(n)]).toEqual([n, t, true])
          }
        }
        expect(inc.generation).toBe(change.names.size > 0 ? gen + 1 : gen)
        expect(inc.serial).toBe(c.snapshot.version)
      }
    }), { numRuns: 120 })
  })

  it('endpoint churn of a ClusterIP Service changes nothing; headless churn reports the Service names', () => {
    const store = new CatalogStore()
    addSvc(store, 'default', 'web', { clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] })
    addSvc(store, 'default', 'db', { clusterIP: 'None', ports: [{ name: 'pg', port: 5432 }] })
    addSvc(store, 'default', 'alias', { type: 'ExternalName', externalName: 'db.default.svc.cluster.local' })
    addSlice(store, 'default', 'db-a', 'db', [{ ip: '10.1.0.1' }], [{ name: 'pg', port: 5432 }])
    const z = ClusterZone.fromSnapshot(store.commit()!.snapshot)
    addSlice(store, 'default', 'web-a', 'web', [{ ip: '10.1.0.9' }])
    const c1 = store.commit()!
    expect(z.apply(c1.snapshot, c1.changes).names.size).toBe(0)
    addSlice(store, 'default', 'db-a', 'db', [{ ip: '10.1.0.1' }, { ip: '10.1.0.2' }], [{ name: 'pg', port: 5432 }])
    const c2 = store.commit()!
    const names = z.apply(c2.snapshot, c2.changes).names
    expect(names).toContain('db.default.svc.cluster.local')
    expect(names).toContain('_pg._tcp.db.default.svc.cluster.local')
    expect(names).toContain('2.0.1.10.in-addr.arpa')
    expect(names).toContain('alias.default.svc.cluster.local') // its CNAME target changed
    expect(names).not.toContain('web.default.svc.cluster.local')
    // peer changes are not DNS changes
    expect(z.apply(c2.snapshot, [{ kind: 'peer', type: 'upsert', key: 'n1' }]).names.size).toBe(0)
  })

  it('a headless Service losing its last ready endpoint vanishes with its subtree (and the namespace when it was the last)', () => {
    const store = new CatalogStore()
    addSvc(store, 'solo', 'db', { clusterIP: 'None', ports: [{ name: 'pg', port: 5432 }] })
    addSlice(store, 'solo', 'db-a', 'db', [{ ip: '10.1.0.1', host: 'db-0' }], [{ name: 'pg', port: 5432 }])
    const z = ClusterZone.fromSnapshot(store.commit()!.snapshot)
    expect(look(z, 'solo.svc.cluster.local', TYPE.A).rcode).toBe(0)
    addSlice(store, 'solo', 'db-a', 'db', [{ ip: '10.1.0.1', host: 'db-0', ready: false }], [{ name: 'pg', port: 5432 }])
    const c = store.commit()!
    const names = z.apply(c.snapshot, c.changes).names
    for (const n of ['db.solo.svc.cluster.local', 'db-0.db.solo.svc.cluster.local', '_pg._tcp.db.solo.svc.cluster.local', '_tcp.db.solo.svc.cluster.local', 'solo.svc.cluster.local', '1.0.1.10.in-addr.arpa']) {
      expect(names).toContain(n)
      if (!n.endsWith('.arpa')) expect(look(z, n, TYPE.A).rcode).toBe(RCODE.NXDOMAIN)
    }
    expect(z.lookup('1.0.1.10.in-addr.arpa', TYPE.PTR)).toBeUndefined()
  })

  // How fast (build, and one apply against it) is measured by test/bench/dns-hotpath.ts.
  it('builds 2000 Services with 5 endpoints each, and applies one change without rebuilding', () => {
    const store = new CatalogStore()
    for (let i = 0; i < 2000; i++) {
      addSvc(store, `ns${i % 20}`, `svc${i}`, { clusterIP: i % 4 === 0 ? 'None' : `10.96.${i >> 8}.${i & 255}`, ports: [{ name: 'http', port: 80 }] })
      addSlice(store, `ns${i % 20}`, `svc${i}-a`, `svc${i}`, [0, 1, 2, 3, 4].map((k) => ({ ip: `10.${k + 1}.${i >> 8}.${i & 255}` })))
    }
    const z = ClusterZone.fromSnapshot(store.commit()!.snapshot)
    expect(data(look(z, 'svc1999.ns19.svc.cluster.local', TYPE.A).answers)).toEqual(['10.96.7.207'])
    expect(data(look(z, 'svc1996.ns16.svc.cluster.local', TYPE.A).answers)).toEqual(['10.1.7.204', '10.2.7.204', '10.3.7.204', '10.4.7.204', '10.5.7.204'])
    addSlice(store, 'ns0', 'svc0-a', 'svc0', [{ ip: '10.9.9.9' }])
    const c = store.commit()!
    // what apply() reads of the snapshot: only the changed Service, never the whole catalog
    const reads: string[] = []
    const counted = <M extends object>(what: string, m: M): M => new Proxy(m, {
      get (target, prop) {
        const v: unknown = Reflect.get(target, prop, target)
        if (typeof v !== 'function') { reads.push(`${what}.${String(prop)}`); return v }
        return (...args: unknown[]) => { reads.push(`${what}.${String(prop)}(${args.map(String).join(',')})`); return (v as (...a: unknown[]) => unknown).apply(target, args) }
      }
    })
    const names = z.apply({ ...c.snapshot, services: counted('services', c.snapshot.services), endpoints: counted('endpoints', c.snapshot.endpoints) }, c.changes).names
    expect(reads).toEqual(['services.get(ns0/svc0)', 'endpoints.get(ns0/svc0)'])
    expect(data(look(z, 'svc0.ns0.svc.cluster.local', TYPE.A).answers)).toEqual(['10.9.9.9'])
    expect(names.size).toBe(14) // headless svc0: its name, 5+1 endpoint names, 6 PTRs, the SRV name (not 10000 names)
  })
})
