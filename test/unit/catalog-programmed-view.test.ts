// The catalog view the node-local DNS follows when the proxy runs: programmed Services change
// only with what the proxy applied, the rest at once; a model test over any interleaving of
// catalog commits and proxy reports, and the DNS zone following the view incrementally.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { CatalogListener } from '../../agent/catalog/catalog.ts'
import { toEndpointSlice, toService, type ServiceInfo } from '../../agent/catalog/model.ts'
import { ProgrammedView } from '../../agent/catalog/programmed-view.ts'
import { CatalogStore, type CatalogSnapshot } from '../../agent/catalog/store.ts'
import { programsService } from '../../agent/proxy/plan.ts'
import { ClusterZone } from '../../agent/dns/zone.ts'
import { TYPE } from '../../agent/dns/wire.ts'

/** A catalog: the real store, commits by hand. */
class FakeCatalog {
  readonly store = new CatalogStore()
  private readonly listeners = new Set<CatalogListener>()
  snapshot (): CatalogSnapshot { return this.store.snapshot() }
  subscribe (fn: CatalogListener): () => void { this.listeners.add(fn); return () => { this.listeners.delete(fn) } }
  commit (): void {
    const r = this.store.commit()
    if (r != null) for (const fn of this.listeners) fn(r.snapshot, r.changes)
  }
}

type Kind = 'cip' | 'headless' | 'ext' | 'v6' | 'sctp'
const NS = 'shop'
function service (name: string, kind: Kind, rv: number): ServiceInfo {
  const n = Number(name.slice(1))
  const spec: Record<string, unknown> = {
    cip: { clusterIP: `10.96.0.${n + 1}`, clusterIPs: [`10.96.0.${n + 1}`], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] },
    headless: { clusterIP: 'None', clusterIPs: ['None'], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] },
    ext: { type: 'ExternalName', externalName: 'www.example.org' },
    v6: { clusterIP: `fd00::${n + 1}`, clusterIPs: [`fd00::${n + 1}`], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] },
    sctp: { clusterIP: `10.96.1.${n + 1}`, clusterIPs: [`10.96.1.${n + 1}`], ports: [{ name: 'x', port: 80, protocol: 'SCTP' }] }
  }[kind]
  return toService({ metadata: { namespace: NS, name, resourceVersion: String(rv) }, spec: { type: 'ClusterIP', ...spec } })!
}
const slice = (service: string, rv: number, ip: string): any => toEndpointSlice({
  metadata: { namespace: NS, name: `${service}-1`, resourceVersion: String(rv), labels: { 'kubernetes.io/service-name': service } },
  addressType: 'IPv4', ports: [{ name: 'http', port: 8080, protocol: 'TCP' }], endpoints: [{ addresses: [ip], conditions: { ready: true } }]
})!

const a = (zone: ClusterZone, name: string): string[] => zone.lookup(`${name}.${NS}.svc.cluster.local`, TYPE.A)!.answers.map((r) => String(r.data))

describe('ProgrammedView', () => {
  it('a ClusterIP Service appears when the proxy applied it; a headless one at once', () => {
    const live = new FakeCatalog()
    const view = new ProgrammedView(live, programsService)
    const zone = ClusterZone.fromSnapshot(view.snapshot())
    view.subscribe((s, c) => { zone.apply(s, c) })
    view.gate()
    live.store.upsert('services', service('s1', 'cip', 1))
    live.store.upsert('services', service('s2', 'headless', 1))
    live.store.upsert('endpointSlices', slice('s2', 1, '10.1.0.2'))
    live.commit()
    expect(a(zone, 's1')).toEqual([]) // NXDOMAIN until programmed
    expect(a(zone, 's2')).toEqual(['10.1.0.2'])
    expect(view.heldKeys).toBe(1)
    const applied = live.snapshot()
    live.store.upsert('endpointSlices', slice('s1', 1, '10.1.0.1'))
    live.commit()
    view.programmed(applied) // the sync that read the first commit: s1 resolves (its REJECT rule is in)
    expect(a(zone, 's1')).toEqual(['10.96.0.2'])
    expect(view.snapshot().endpoints.get(`${NS}/s1`)).toBeUndefined() // its slice came later
    expect(view.heldKeys).toBe(1)
    view.programmed(live.snapshot())
    expect(view.heldKeys).toBe(0)
    expect(view.snapshot().endpoints.get(`${NS}/s1`)?.size).toBe(1)
    // deleted: the name goes once the rules are gone
    live.store.remove('services', `${NS}/s1`)
    live.commit()
    expect(a(zone, 's1')).toEqual(['10.96.0.2'])
    view.programmed(live.snapshot())
    expect(zone.lookup(`s1.${NS}.svc.cluster.local`, TYPE.A)!.rcode).toBe(3)
  })

  it('before gate() the view is the live catalog', () => {
    const live = new FakeCatalog()
    const view = new ProgrammedView(live, programsService)
    live.store.upsert('services', service('s1', 'cip', 1))
    live.commit()
    expect(view.snapshot().services.get(`${NS}/s1`)).toBe(live.snapshot().services.get(`${NS}/s1`))
    view.stop()
    live.store.upsert('services', service('s1', 'cip', 2))
    live.commit()
    expect(view.snapshot().services.get(`${NS}/s1`)?.resourceVersion).toBe('1')
  })

  it('model: per key, the view holds what the proxy applied when either side programs it, the live catalog otherwise; the zone follows it incrementally', () => {
    const names = ['s0', 's1', 's2', 's3']
    const op = fc.oneof(
      fc.record({ t: fc.constant('svc' as const), name: fc.constantFrom(...names), kind: fc.constantFrom<Kind>('cip', 'cip', 'headless', 'ext', 'v6', 'sctp') }),
      fc.record({ t: fc.constant('delsvc' as const), name: fc.constantFrom(...names) }),
      fc.record({ t: fc.constant('slice' as const), name: fc.constantFrom(...names), ip: fc.integer({ min: 1, max: 3 }) }),
      fc.record({ t: fc.constant('delslice' as const), name: fc.constantFrom(...names) }),
      fc.record({ t: fc.constant('peer' as const), n: fc.integer({ min: 0, max: 2 }) }),
      fc.constant({ t: 'commit' as const }),
      fc.constant({ t: 'gate' as const }),
      fc.constant({ t: 'syncStart' as const }),
      fc.constant({ t: 'syncEnd' as const })
    )
    fc.assert(fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
      const live = new FakeCatalog()
      const view = new ProgrammedView(live, programsService)
      const zone = ClusterZone.fromSnapshot(view.snapshot())
      view.subscribe((s, c) => { zone.apply(s, c) })
      let rv = 0
      let gated = false
      let ref: CatalogSnapshot | undefined // what the proxy last applied (the live catalog at gate() before its first report)
      let syncing: CatalogSnapshot | undefined
      for (const o of ops) {
        rv++
        switch (o.t) {
          case 'svc': live.store.upsert('services', service(o.name, o.kind, rv)); break
          case 'delsvc': live.store.remove('services', `${NS}/${o.name}`); break
          case 'slice': live.store.upsert('endpointSlices', slice(o.name, rv, `10.1.0.${o.ip}`)); break
          case 'delslice': live.store.remove('endpointSlices', `${NS}/${o.name}-1`); break
          case 'peer': live.store.upsert('peers', { nodeName: `n${o.n}`, resourceVersion: String(rv), peerId: 'p', addresses: [], writtenAt: rv }); break
          case 'commit': live.commit(); break
          case 'gate': if (!gated) { gated = true; ref = live.snapshot(); view.gate() } break
          case 'syncStart': if (gated && syncing == null) syncing = live.snapshot(); break
          case 'syncEnd': if (syncing != null) { view.programmed(syncing); ref = syncing; syncing = undefined } break
        }
        const l = live.snapshot()
        const v = view.snapshot()
        const keys = new Set([...l.services.keys(), ...v.services.keys(), ...(ref?.services.keys() ?? []), ...l.endpoints.keys(), ...v.endpoints.keys()])
        for (const key of keys) {
          const from = gated && (programsService(l.services.get(key)) || programsService(ref!.services.get(key))) ? ref! : l
          expect(v.services.get(key), `service ${key}`).toBe(from.services.get(key))
          expect(v.endpoints.get(key), `endpoints ${key}`).toBe(from.endpoints.get(key))
        }
        expect([...v.peers]).toEqual([...l.peers])
        const rebuilt = ClusterZone.fromSnapshot(v)
        expect([...zone.names()].sort()).toEqual([...rebuilt.names()].sort())
        for (const n of names) expect(zone.lookup(`${n}.${NS}.svc.cluster.local`, TYPE.A)).toEqual(rebuilt.lookup(`${n}.${NS}.svc.cluster.local`, TYPE.A))
      }
    }), { numRuns: 400 })
  })
})
