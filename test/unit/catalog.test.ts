// The catalog's pure core: object transforms, the copy-on-write store and its change events,
// and the on-disk snapshot format.
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { peerLease, recordOwnerUid, samePeerContent, toEndpointSlice, toPeer, toService, type EndpointSliceInfo, type ServiceInfo } from '../../agent/catalog/model.ts'
import { CatalogStore, endpointsOf } from '../../agent/catalog/store.ts'
import { CowMap } from '../../agent/catalog/cow-map.ts'
import { parseSavedCatalog, readSnapshotFile, serializeSnapshot, writeSnapshotFile } from '../../agent/catalog/snapshot-file.ts'

const svcObj = (ns: string, name: string, rv: string, extra: Record<string, unknown> = {}): any => ({
  metadata: { namespace: ns, name, resourceVersion: rv },
  spec: { type: 'ClusterIP', clusterIP: '10.96.0.10', clusterIPs: ['10.96.0.10'], ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }], ...extra }
})
const sliceObj = (ns: string, name: string, svc: string, rv: string, ips: string[], ready = true): any => ({
  metadata: { namespace: ns, name, resourceVersion: rv, labels: { 'kubernetes.io/service-name': svc } },
  addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  endpoints: ips.map((ip, i) => ({ addresses: [ip], conditions: { ready }, nodeName: `node-${i}`, targetRef: { kind: 'Pod', name: `pod-${i}` } }))
})
const svc = (ns: string, name: string, rv = '1'): ServiceInfo => toService(svcObj(ns, name, rv))!
const slice = (ns: string, name: string, service: string, rv = '1', ips = ['10.0.0.1']): EndpointSliceInfo => toEndpointSlice(sliceObj(ns, name, service, rv, ips))!

describe('transforms', () => {
  it('keeps what the mesh needs from a ClusterIP Service', () => {
    const s = toService(svcObj('default', 'web', '7', { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } } }))
    expect(s).toEqual({
      namespace: 'default', name: 'web', resourceVersion: '7', type: 'ClusterIP', clusterIPs: ['10.96.0.10'], headless: false,
      ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }], sessionAffinity: 'ClientIP', affinityTimeoutSeconds: 60, publishNotReadyAddresses: false
    })
  })

  it('recognises headless and ExternalName Services', () => {
    const h = toService(svcObj('ns', 'db', '1', { clusterIP: 'None', clusterIPs: ['None'] }))!
    expect([h.headless, h.clusterIPs]).toEqual([true, []])
    const e = toService({ metadata: { namespace: 'ns', name: 'ext', resourceVersion: '1' }, spec: { type: 'ExternalName', externalName: 'example.org' } })!
    expect([e.headless, e.externalName, e.clusterIPs]).toEqual([false, 'example.org', []])
  })

  it('reads EndpointSlice conditions the way the API defines them (nil ready = ready)', () => {
    const s = toEndpointSlice({
      metadata: { namespace: 'ns', name: 'web-abc', resourceVersion: '3', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      endpoints: [
        { addresses: ['10.0.0.1'] },
        { addresses: ['10.0.0.2'], conditions: { ready: false, serving: true, terminating: true }, hostname: 'web-1', nodeName: 'n2', zone: 'z' },
        { addresses: [] }
      ]
    })!
    expect(s.serviceName).toBe('web')
    expect(s.endpoints).toEqual([
      { addresses: ['10.0.0.1'], ready: true, serving: true, terminating: false },
      { addresses: ['10.0.0.2'], ready: false, serving: true, terminating: true, hostname: 'web-1', nodeName: 'n2', zone: 'z' }
    ])
  })

  it('round-trips a peer record through the Lease it is published as', () => {
    const now = new Date('2026-11-22T02:00:00.123Z')
    const owner = { name: 'edge-1', uid: '5f0c1c9e-0d3a-4d0e-9d5e-1a2b3c4d5e6f' }
    const lease = peerLease({ namespace: 'edgemesh', nodeName: 'edge-1', peerId: '12D3KooWabc', addresses: ['/ip4/10.1.0.2/tcp/4004'], homeRelay: '12D3KooWrelay', owner, leaseDurationSeconds: 40, now })
    expect(lease.spec.renewTime).toBe('2026-11-22T02:00:00.123000Z') // the time of the write
    expect(lease.spec.holderIdentity).toBe('12D3KooWabc')
    expect(lease.metadata.annotations['edgemesh.io/home-relay']).toBe('12D3KooWrelay')
    expect(lease.metadata.ownerReferences).toEqual([{ apiVersion: 'v1', kind: 'Node', name: 'edge-1', uid: owner.uid }])
    expect(recordOwnerUid(lease)).toBe(owner.uid)
    const p = toPeer({ ...lease, metadata: { ...lease.metadata, resourceVersion: '9' } })!
    expect(p).toEqual({ nodeName: 'edge-1', resourceVersion: '9', peerId: '12D3KooWabc', addresses: ['/ip4/10.1.0.2/tcp/4004'], homeRelay: '12D3KooWrelay', writtenAt: now.getTime() })
    // without a home relay or an owner: neither annotation nor ownerReferences
    const bare = peerLease({ namespace: 'edgemesh', nodeName: 'edge-1', peerId: '12D3KooWabc', addresses: [], leaseDurationSeconds: 40, now })
    expect(Object.keys(bare.metadata.annotations).sort()).toEqual(['edgemesh.io/addresses', 'edgemesh.io/peer-id'])
    expect(bare.metadata.ownerReferences).toBeUndefined()
    expect(recordOwnerUid(bare)).toBeUndefined()
    expect(toPeer({ ...bare, metadata: { ...bare.metadata, resourceVersion: '3' } })!.homeRelay).toBeUndefined()
  })

  it('parses records written by older agents (renewed every 10 s, no home relay, no owner)', () => {
    const old = { metadata: { name: 'edge-2', resourceVersion: '77', annotations: { 'edgemesh.io/peer-id': '12D3KooWold', 'edgemesh.io/addresses': '["/ip4/10.1.0.3/tcp/4004"]' } }, spec: { holderIdentity: '12D3KooWold', leaseDurationSeconds: 40, renewTime: '2026-12-03T21:00:00.000000Z' } }
    expect(toPeer(old)).toEqual({ nodeName: 'edge-2', resourceVersion: '77', peerId: '12D3KooWold', addresses: ['/ip4/10.1.0.3/tcp/4004'], writtenAt: Date.parse('2026-12-03T21:00:00Z') })
    expect(samePeerContent(toPeer(old)!, { peerId: '12D3KooWold', addresses: ['/ip4/10.1.0.3/tcp/4004'] })).toBe(true)
    expect(samePeerContent(toPeer(old)!, { peerId: '12D3KooWold', addresses: ['/ip4/10.1.0.3/tcp/4004'], homeRelay: 'r' })).toBe(false)
    expect(samePeerContent(toPeer(old)!, { peerId: '12D3KooWold', addresses: [] })).toBe(false)
  })

  it('never throws on arbitrary JSON and rejects objects without a name', () => {
    fc.assert(fc.property(fc.jsonValue(), (v) => {
      for (const t of [toService, toEndpointSlice, toPeer]) t(v)
      for (const t of [toService, toEndpointSlice, toPeer]) t({ metadata: v, spec: v, status: v, endpoints: v, ports: v })
    }), { numRuns: 20_000 })
    expect(toService({ metadata: {} })).toBeUndefined()
    expect(toPeer({ metadata: { name: 'x' } })).toBeUndefined()
  })
})

describe('CowMap', () => {
  it('behaves like a Map, and frozen versions never change', () => {
    const op = fc.oneof(
      fc.record({ t: fc.constant('set' as const), k: fc.string({ maxLength: 6 }), v: fc.integer() }),
      fc.record({ t: fc.constant('del' as const), k: fc.string({ maxLength: 6 }) }),
      fc.record({ t: fc.constant('freeze' as const) })
    )
    fc.assert(fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
      const model = new Map<string, number>()
      let draft = CowMap.empty<number>().edit()
      const versions: Array<[CowMap<number>, Map<string, number>]> = []
      for (const o of ops) {
        if (o.t === 'set') { draft.set(o.k, o.v); model.set(o.k, o.v) }
        if (o.t === 'del') expect(draft.delete(o.k)).toBe(model.delete(o.k))
        if (o.t === 'freeze') { versions.push([draft.freeze(), new Map(model)]); draft = versions.at(-1)![0].edit() }
        expect(draft.size).toBe(model.size)
      }
      versions.push([draft.freeze(), new Map(model)])
      for (const [frozen, expected] of versions) {
        expect(frozen.size).toBe(expected.size)
        expect(new Map(frozen)).toEqual(expected)
        for (const [k, v] of expected) expect(frozen.get(k)).toBe(v)
      }
    }), { numRuns: 1000 })
  })

  it('copies only the shards an edit touches', () => {
    const big = CowMap.from(Array.from({ length: 10_000 }, (_, i): [string, number] => [`ns/svc-${i}`, i]))
    const next = big.edit().set('ns/svc-1', -1).freeze()
    expect([big.get('ns/svc-1'), next.get('ns/svc-1'), next.size]).toEqual([1, -1, 10_000])
    const shared = (big as any).shards.filter((s: unknown, i: number) => s === (next as any).shards[i]).length
    expect(shared).toBe(255)
  })
})

describe('CatalogStore', () => {
  it('publishes nothing until something changes, then one snapshot per commit', () => {
    const store = new CatalogStore()
    expect(store.commit()).toBeUndefined()
    store.setSource('api')
    store.upsert('services', svc('a', 'web'))
    const r = store.commit()!
    expect(r.snapshot.version).toBe(1)
    expect(r.changes).toEqual([{ kind: 'service', type: 'upsert', key: 'a/web' }])
    expect(store.commit()).toBeUndefined()
  })

  it('never mutates a published snapshot', () => {
    const store = new CatalogStore()
    store.setSource('api')
    store.replace('services', [svc('a', 'web')])
    const first = store.commit()!.snapshot
    store.upsert('services', svc('a', 'api'))
    store.remove('services', 'a/web')
    const second = store.commit()!.snapshot
    expect([...first.services.keys()]).toEqual(['a/web'])
    expect([...second.services.keys()]).toEqual(['a/api'])
    expect(Object.isFrozen(second)).toBe(true)
    // untouched kinds are shared, not copied
    expect(second.peers).toBe(first.peers)
  })

  it('relist emits only real differences: no duplicates, deletions for what vanished', () => {
    const store = new CatalogStore()
    store.setSource('api')
    store.replace('services', [svc('a', 'one', '1'), svc('a', 'two', '1'), svc('a', 'three', '1')])
    store.commit()
    store.replace('services', [svc('a', 'one', '1'), svc('a', 'two', '5'), svc('a', 'four', '6')])
    const { snapshot, changes } = store.commit()!
    expect(changes.sort((x, y) => x.key.localeCompare(y.key))).toEqual([
      { kind: 'service', type: 'upsert', key: 'a/four' },
      { kind: 'service', type: 'delete', key: 'a/three' },
      { kind: 'service', type: 'upsert', key: 'a/two' }
    ])
    expect([...snapshot.services.keys()].sort()).toEqual(['a/four', 'a/one', 'a/two'])
  })

  it('groups EndpointSlices by Service and follows slices that move or vanish', () => {
    const store = new CatalogStore()
    store.setSource('api')
    store.upsert('endpointSlices', slice('a', 'web-1', 'web', '1', ['10.0.0.1']))
    store.upsert('endpointSlices', slice('a', 'web-2', 'web', '1', ['10.0.0.2']))
    let snap = store.commit()!.snapshot
    expect(endpointsOf(snap, 'a', 'web').flatMap((s) => s.endpoints.map((e) => e.addresses[0]))).toEqual(['10.0.0.1', '10.0.0.2'])
    // relabelled to another service
    store.upsert('endpointSlices', slice('a', 'web-2', 'api', '2', ['10.0.0.2']))
    let r = store.commit()!
    snap = r.snapshot
    expect(endpointsOf(snap, 'a', 'web').length).toBe(1)
    expect(endpointsOf(snap, 'a', 'api').length).toBe(1)
    expect(r.changes.map((c) => `${c.type} ${c.key}`).sort()).toEqual(['upsert a/api', 'upsert a/web'])
    store.remove('endpointSlices', 'a/web-1')
    r = store.commit()!
    expect(r.changes).toEqual([{ kind: 'endpoints', type: 'delete', key: 'a/web' }])
    expect(r.snapshot.endpoints.has('a/web')).toBe(false)
    // a relist without the slice removes it too
    store.replace('endpointSlices', [])
    r = store.commit()!
    expect(r.snapshot.endpoints.size).toBe(0)
  })

  it('matches a model of the API under any sequence of upserts, deletes and relists', () => {
    const op = fc.oneof(
      fc.record({ t: fc.constant('up' as const), name: fc.integer({ min: 0, max: 9 }), rv: fc.integer({ min: 1, max: 5 }) }),
      fc.record({ t: fc.constant('del' as const), name: fc.integer({ min: 0, max: 9 }) }),
      fc.record({ t: fc.constant('relist' as const), names: fc.uniqueArray(fc.integer({ min: 0, max: 9 })) })
    )
    fc.assert(fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
      const store = new CatalogStore()
      store.setSource('api')
      const model = new Map<string, string>()
      for (const o of ops) {
        if (o.t === 'up') { store.upsert('services', svc('n', `s${o.name}`, String(o.rv))); model.set(`n/s${o.name}`, String(o.rv)) }
        if (o.t === 'del') { store.remove('services', `n/s${o.name}`); model.delete(`n/s${o.name}`) }
        if (o.t === 'relist') {
          store.replace('services', o.names.map((n) => svc('n', `s${n}`, '9')))
          model.clear()
          for (const n of o.names) model.set(`n/s${n}`, '9')
        }
        const snap = store.commit()?.snapshot ?? store.snapshot()
        expect(new Map([...snap.services].map(([k, v]) => [k, v.resourceVersion]))).toEqual(model)
      }
    }), { numRuns: 500 })
  })
})

describe('snapshot file', () => {
  let dir: string
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'edgemesh-snap-')) })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  it('round-trips a snapshot and leaves no temporary files', async () => {
    const store = new CatalogStore()
    store.setSource('api')
    store.replace('services', [svc('a', 'web'), svc('b', 'db')])
    store.replace('endpointSlices', [slice('a', 'web-1', 'web', '1', ['10.0.0.1', '10.0.0.2'])])
    store.upsert('peers', toPeer(peerLease({ namespace: 'm', nodeName: 'edge-1', peerId: '12D3KooWx', addresses: [], leaseDurationSeconds: 40, now: new Date() }))!)
    const snap = store.commit()!.snapshot
    const file = join(dir, 'sub', 'catalog.json')
    await writeSnapshotFile(file, snap)
    await writeSnapshotFile(file, snap)
    expect(await readdir(join(dir, 'sub'))).toEqual(['catalog.json'])
    const saved = (await readSnapshotFile(file))!
    const restored = new CatalogStore()
    restored.replace('services', saved.services)
    restored.replace('endpointSlices', saved.endpointSlices)
    restored.replace('peers', saved.peers)
    const again = restored.commit()!.snapshot
    expect(again.services).toEqual(snap.services)
    expect(again.endpoints).toEqual(snap.endpoints)
    expect(again.peers).toEqual(snap.peers)
    expect(JSON.parse(await readFile(file, 'utf8')).format).toBe(1)
  })

  it('reports a missing file as absent and a damaged one with a clear error', async () => {
    expect(await readSnapshotFile(join(dir, 'nope.json'))).toBeUndefined()
    const bad = join(dir, 'bad.json')
    await writeFile(bad, '{"format":1,"services":')
    await expect(readSnapshotFile(bad)).rejects.toThrow(/bad\.json: not JSON/)
    expect(() => parseSavedCatalog('{"format":2}', 'x')).toThrow(/unknown snapshot format 2/)
    expect(() => parseSavedCatalog(JSON.stringify({ format: 1, savedAt: 0, services: [{}], endpointSlices: [], nodes: [], peers: [] }), 'x')).toThrow(/malformed/)
    expect(serializeSnapshot(new CatalogStore().snapshot(), 5)).toBe('{"format":1,"savedAt":5,"services":[],"endpointSlices":[],"nodes":[],"peers":[]}')
  })

  it('loads a file an older agent wrote (with Nodes and renewed peer records): the Nodes are ignored, renewTime reads as the last write', async () => {
    const old = join(dir, 'old.json')
    await writeFile(old, JSON.stringify({
      format: 1,
      savedAt: 1_700_000_000_000,
      services: [svc('a', 'web')],
      endpointSlices: [],
      nodes: [{ name: 'n1', resourceVersion: '5', internalIPs: ['10.1.0.2'], externalIPs: [], hostname: 'n1', ready: true }],
      peers: [{ nodeName: 'edge-1', resourceVersion: '9', peerId: '12D3KooWx', addresses: ['/ip4/10.1.0.2/tcp/4004'], renewTime: 1_699_999_990_000, leaseDurationSeconds: 40 }]
    }))
    const saved = (await readSnapshotFile(old))!
    expect(saved.services.map((s) => s.name)).toEqual(['web'])
    expect('nodes' in saved).toBe(false)
    expect(saved.peers).toEqual([{ nodeName: 'edge-1', resourceVersion: '9', peerId: '12D3KooWx', addresses: ['/ip4/10.1.0.2/tcp/4004'], writtenAt: 1_699_999_990_000 }])
    // a file without "nodes" (none written by this version, but harmless) loads too
    expect(parseSavedCatalog(JSON.stringify({ format: 1, savedAt: 0, services: [], endpointSlices: [], peers: [] }), 'x').peers).toEqual([])
  })
})
