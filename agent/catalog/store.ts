// The catalog's state machine, free of I/O: reflectors feed it list results and watch events,
// commit() publishes an immutable snapshot plus the changes since the last one. The maps are
// sharded copy-on-write (cow-map.ts), so a snapshot handed out never changes and one update
// costs a copy of the shard it touches, not of the whole catalog.
import { CowMap, type CowMapDraft } from './cow-map.ts'
import type { EndpointSliceInfo, PeerInfo, ServiceInfo } from './model.ts'

export type SnapshotSource = 'empty' | 'disk' | 'api'

export interface CatalogSnapshot {
  /** increases with every commit */
  readonly version: number
  /** where the newest data came from: the API, or the disk snapshot while the API is unreachable */
  readonly source: SnapshotSource
  /** "namespace/name" -> Service */
  readonly services: ReadonlyMap<string, ServiceInfo>
  /** "namespace/service" -> slice name -> EndpointSlice */
  readonly endpoints: ReadonlyMap<string, ReadonlyMap<string, EndpointSliceInfo>>
  /** node name -> peer record */
  readonly peers: ReadonlyMap<string, PeerInfo>
}

export type ChangeKind = 'service' | 'endpoints' | 'peer'
/** key: "namespace/name" for service and endpoints (the Service's key), the node name for peer */
export interface CatalogChange { kind: ChangeKind, type: 'upsert' | 'delete', key: string }

// no Nodes: every Node status update would reach every agent (node-lookup.ts asks on demand)
export type ResourceKind = 'services' | 'endpointSlices' | 'peers'
export type ItemOf<K extends ResourceKind> = K extends 'services' ? ServiceInfo : K extends 'endpointSlices' ? EndpointSliceInfo : PeerInfo

export const serviceKey = (namespace: string, name: string): string => `${namespace}/${name}`

function keyOf (kind: ResourceKind, item: any): string {
  switch (kind) {
    case 'services': case 'endpointSlices': return `${item.namespace as string}/${item.name as string}`
    case 'peers': return item.nodeName
  }
}

export const EMPTY_SNAPSHOT: CatalogSnapshot = Object.freeze({ version: 0, source: 'empty' as const, services: CowMap.empty<ServiceInfo>(), endpoints: CowMap.empty<ReadonlyMap<string, EndpointSliceInfo>>(), peers: CowMap.empty<PeerInfo>() })

interface Maps {
  services: CowMap<ServiceInfo>
  endpoints: CowMap<ReadonlyMap<string, EndpointSliceInfo>>
  peers: CowMap<PeerInfo>
}
type Drafts = { [K in keyof Maps]?: Maps[K] extends CowMap<infer V> ? CowMapDraft<V> : never }

export class CatalogStore {
  private current: CatalogSnapshot = EMPTY_SNAPSHOT
  private maps: Maps = { services: CowMap.empty(), endpoints: CowMap.empty(), peers: CowMap.empty() }
  /** slice key -> EndpointSlice, to find the owning Service on update/delete */
  private readonly slices = new Map<string, EndpointSliceInfo>()
  private drafts: Drafts = {}
  private readonly changes: Record<ChangeKind, Map<string, 'upsert' | 'delete'>> = { service: new Map(), endpoints: new Map(), peer: new Map() }
  private changeCount = 0
  private source: SnapshotSource = 'empty'

  snapshot (): CatalogSnapshot { return this.current }
  get pending (): boolean { return this.changeCount > 0 || this.source !== this.current.source }

  setSource (source: SnapshotSource): void { this.source = source }

  private note (kind: ChangeKind, type: 'upsert' | 'delete', key: string): void {
    const m = this.changes[kind]
    if (!m.has(key)) this.changeCount++
    m.set(key, type)
  }

  private draft<K extends keyof Maps> (k: K): NonNullable<Drafts[K]> {
    const d = this.drafts as any
    d[k] ??= this.maps[k].edit()
    return d[k]
  }

  private get<K extends ResourceKind> (kind: K, key: string): ItemOf<K> | undefined {
    if (kind === 'endpointSlices') return this.slices.get(key) as ItemOf<K> | undefined
    const k = kind as 'services' | 'peers'
    return ((this.drafts as any)[k] ?? this.maps[k]).get(key)
  }

  upsert<K extends ResourceKind> (kind: K, item: ItemOf<K>): void {
    const key = keyOf(kind, item)
    switch (kind) {
      case 'services': this.draft('services').set(key, item as ServiceInfo); this.note('service', 'upsert', key); break
      case 'peers': this.draft('peers').set(key, item as PeerInfo); this.note('peer', 'upsert', key); break
      case 'endpointSlices': {
        const slice = item as EndpointSliceInfo
        const old = this.slices.get(key)
        if (old != null && old.serviceName !== slice.serviceName) this.dropSlice(old)
        this.slices.set(key, slice)
        if (slice.serviceName === '') break
        const svc = serviceKey(slice.namespace, slice.serviceName)
        const endpoints = this.draft('endpoints')
        const bySlice = new Map(endpoints.get(svc) ?? [])
        bySlice.set(slice.name, slice)
        endpoints.set(svc, bySlice)
        this.note('endpoints', 'upsert', svc)
      }
    }
  }

  private dropSlice (slice: EndpointSliceInfo): void {
    this.slices.delete(keyOf('endpointSlices', slice))
    if (slice.serviceName === '') return
    const svc = serviceKey(slice.namespace, slice.serviceName)
    const endpoints = this.draft('endpoints')
    const old = endpoints.get(svc)
    if (old?.has(slice.name) !== true) return
    const bySlice = new Map(old)
    bySlice.delete(slice.name)
    if (bySlice.size === 0) {
      endpoints.delete(svc)
      this.note('endpoints', 'delete', svc)
    } else {
      endpoints.set(svc, bySlice)
      this.note('endpoints', 'upsert', svc)
    }
  }

  remove (kind: ResourceKind, key: string): void {
    switch (kind) {
      case 'endpointSlices': { const s = this.slices.get(key); if (s != null) this.dropSlice(s); break }
      case 'services': if (this.draft('services').delete(key)) this.note('service', 'delete', key); break
      case 'peers': if (this.draft('peers').delete(key)) this.note('peer', 'delete', key); break
    }
  }

  /** A full LIST: upserts what changed (by resourceVersion), deletes what is gone. */
  replace<K extends ResourceKind> (kind: K, items: Array<ItemOf<K>>): void {
    const seen = new Set<string>()
    for (const item of items) {
      const key = keyOf(kind, item)
      seen.add(key)
      const old = this.get(kind, key)
      if (old == null || old.resourceVersion !== item.resourceVersion || old.resourceVersion === '') this.upsert(kind, item)
    }
    const k = kind as 'services' | 'peers'
    const existing = kind === 'endpointSlices' ? [...this.slices.keys()] : [...((this.drafts as any)[k] ?? this.maps[k]).keys()]
    for (const key of existing) if (!seen.has(key)) this.remove(kind, key)
  }

  /** Publishes the pending changes as a new snapshot; undefined when nothing changed. */
  commit (): { snapshot: CatalogSnapshot, changes: CatalogChange[] } | undefined {
    if (!this.pending) return undefined
    for (const k of ['services', 'endpoints', 'peers'] as const) {
      const d = this.drafts[k]
      if (d != null) (this.maps as any)[k] = d.freeze()
    }
    this.drafts = {}
    this.current = Object.freeze({ version: this.current.version + 1, source: this.source, ...this.maps })
    const changes: CatalogChange[] = []
    for (const kind of ['service', 'endpoints', 'peer'] as const) {
      for (const [key, type] of this.changes[kind]) changes.push({ kind, type, key })
      this.changes[kind].clear()
    }
    this.changeCount = 0
    return { snapshot: this.current, changes }
  }
}

/** How many EndpointSlices and endpoints a snapshot holds. */
export function countEndpoints (snapshot: CatalogSnapshot): { slices: number, endpoints: number } {
  let slices = 0
  let endpoints = 0
  for (const bySlice of snapshot.endpoints.values()) {
    for (const s of bySlice.values()) { slices++; endpoints += s.endpoints.length }
  }
  return { slices, endpoints }
}

/** The EndpointSlices of a Service (empty when it has none). */
export function endpointsOf (snapshot: CatalogSnapshot, namespace: string, name: string): EndpointSliceInfo[] {
  return [...(snapshot.endpoints.get(serviceKey(namespace, name))?.values() ?? [])]
}
