// The catalog as the node-local DNS sees it when the ClusterIP proxy runs: a name resolves only
// once it can be reached. Services the proxy writes rules for (`programs`, the proxy's own
// predicate, passed in by the composition root) appear, change and vanish in this view only when
// the proxy reports a snapshot it has applied; every other Service (headless, ExternalName, no
// IPv4 ClusterIP or no TCP/UDP port) and the nodes and peers follow the live catalog at once.
//
// Before gate() the view is the live catalog (the agent's DNS starts before the proxy, and a
// restarted agent's names should not vanish while the proxy loads); from gate() on (the proxy
// is starting), live changes to programmed Services are held per key until programmed() brings
// a snapshot at least as new.
// Each report also moves every held key to what that snapshot holds (it is what the kernel has).
// Invariant (checked by a model test): the view's Services and endpoints are, per key, those of
// the last programmed snapshot when either it or the live catalog has the key as a programmed
// Service, and the live catalog's otherwise.
import type { CatalogListener } from './catalog.ts'
import { CowMap, type CowMapDraft } from './cow-map.ts'
import type { EndpointSliceInfo, ServiceInfo } from './model.ts'
import type { CatalogChange, CatalogSnapshot } from './store.ts'

/** What a follower of the catalog needs: the current snapshot and the commits after it. */
export interface CatalogFeed {
  snapshot: () => CatalogSnapshot
  subscribe: (fn: CatalogListener) => () => void
}

type Slices = ReadonlyMap<string, EndpointSliceInfo>
const cow = <V>(m: ReadonlyMap<string, V>): CowMap<V> => m instanceof CowMap ? m : CowMap.from(m)

export class ProgrammedView implements CatalogFeed {
  private readonly live: CatalogFeed
  private readonly programs: (svc: ServiceInfo | undefined) => boolean
  private current: CatalogSnapshot
  private services: CowMap<ServiceInfo>
  private endpoints: CowMap<Slices>
  /** the last snapshot the proxy applied (from gate() until its first report: the live catalog then); undefined before gate() */
  private last: CatalogSnapshot | undefined
  /** key -> live version of its newest change not yet applied by the proxy */
  private readonly held = new Map<string, number>()
  private readonly listeners = new Set<CatalogListener>()
  private readonly unsubscribe: () => void

  constructor (live: CatalogFeed, programs: (svc: ServiceInfo | undefined) => boolean) {
    this.live = live
    this.programs = programs
    this.current = live.snapshot()
    this.services = cow(this.current.services)
    this.endpoints = cow(this.current.endpoints)
    this.unsubscribe = live.subscribe((snap, changes) => { this.onLive(snap, changes) })
  }

  snapshot (): CatalogSnapshot { return this.current }

  subscribe (fn: CatalogListener): () => void {
    this.listeners.add(fn)
    return () => { this.listeners.delete(fn) }
  }

  /** Keys whose live changes wait for the proxy (for status and tests). */
  get heldKeys (): number { return this.held.size }

  /** From now on, programmed Services follow programmed() (until its first report: as they are now). */
  gate (): void { this.last ??= this.live.snapshot() }

  /** The proxy applied `snapshot` (called after each successful sync, in order). */
  programmed (snapshot: CatalogSnapshot): void {
    this.last = snapshot
    if (this.held.size === 0) return
    const s = this.services.edit()
    const e = this.endpoints.edit()
    const out: CatalogChange[] = []
    const live = this.live.snapshot()
    for (const [key, version] of this.held) {
      if (this.programs(live.services.get(key)) || this.programs(snapshot.services.get(key))) {
        this.copy(key, snapshot, s, e, out)
        if (version <= snapshot.version) this.held.delete(key)
      } else {
        // programmed neither now nor in what the kernel holds (e.g. it became headless): live
        this.copy(key, live, s, e, out)
        this.held.delete(key)
      }
    }
    this.publish(s, e, out, live)
  }

  stop (): void { this.unsubscribe() }

  private onLive (snap: CatalogSnapshot, changes: readonly CatalogChange[]): void {
    const s = this.services.edit()
    const e = this.endpoints.edit()
    const out: CatalogChange[] = []
    const seen = new Set<string>()
    for (const c of changes) {
      if (c.kind === 'peer') { out.push(c); continue }
      if (seen.has(c.key)) continue
      seen.add(c.key)
      const last = this.last
      if (last != null && (this.programs(snap.services.get(c.key)) || this.programs(last.services.get(c.key)))) {
        // shown as the kernel has it (a slice that arrived before its Service goes too), held until a report includes it
        this.copy(c.key, last, s, e, out)
        if (last.version < snap.version) this.held.set(c.key, snap.version)
        else this.held.delete(c.key)
        continue
      }
      this.held.delete(c.key)
      this.copy(c.key, snap, s, e, out)
    }
    this.publish(s, e, out, snap)
  }

  /** Makes key's Service and slices those of `from`; notes a change when they differ. */
  private copy (key: string, from: CatalogSnapshot, s: CowMapDraft<ServiceInfo>, e: CowMapDraft<Slices>, out: CatalogChange[]): void {
    const svc = from.services.get(key)
    const slices = from.endpoints.get(key)
    if (s.get(key) !== svc) {
      if (svc === undefined) s.delete(key); else s.set(key, svc)
      out.push({ kind: 'service', type: svc === undefined ? 'delete' : 'upsert', key })
    }
    if (e.get(key) !== slices) {
      if (slices === undefined) e.delete(key); else e.set(key, slices)
      out.push({ kind: 'endpoints', type: slices === undefined ? 'delete' : 'upsert', key })
    }
  }

  private publish (s: CowMapDraft<ServiceInfo>, e: CowMapDraft<Slices>, out: CatalogChange[], live: CatalogSnapshot): void {
    if (out.length === 0) return
    this.services = s.freeze()
    this.endpoints = e.freeze()
    this.current = Object.freeze({
      version: Math.max(this.current.version + 1, live.version),
      source: live.source,
      services: this.services,
      endpoints: this.endpoints,
      peers: live.peers
    })
    for (const fn of this.listeners) fn(this.current, out)
  }
}
