// The catalog's state machine, free of I/O: reflectors feed it list results and watch events,
// commit() publishes an immutable snapshot plus the changes since the last one. Maps are copied
// on write per commit (only the kinds that changed), so a snapshot handed out never changes
// and a steady trickle of updates costs one Map copy per batch, not a rebuild.
import type { EndpointSliceInfo, NodeInfo, PeerInfo, ServiceInfo } from './model.ts'

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
  readonly nodes: ReadonlyMap<string, NodeInfo>
  /** node name -> peer record */
  readonly peers: ReadonlyMap<string, PeerInfo>
}

export type ChangeKind = 'service' | 'endpoints' | 'node' | 'peer'
/** key: "namespace/name" for service and endpoints (the Service's key), the name for node and peer */
export interface CatalogChange { kind: ChangeKind, type: 'upsert' | 'delete', key: string }

export type ResourceKind = 'services' | 'endpointSlices' | 'nodes' | 'peers'
export type ItemOf<K extends ResourceKind> = K extends 'services' ? ServiceInfo : K extends 'endpointSlices' ? EndpointSliceInfo : K extends 'nodes' ? NodeInfo : PeerInfo

export const serviceKey = (namespace: string, name: string): string => `${namespace}/${name}`

function keyOf (kind: ResourceKind, item: any): string {
  switch (kind) {
    case 'services': case 'endpointSlices': return `${item.namespace as string}/${item.name as string}`
    case 'nodes': return item.name
    case 'peers': return item.nodeName
  }
}

export const EMPTY_SNAPSHOT: CatalogSnapshot = { version: 0, source: 'empty', services: new Map(), endpoints: new Map(), nodes: new Map(), peers: new Map() }

export class CatalogStore {
  private current: CatalogSnapshot
  /** slice key -> EndpointSlice, to find the owning Service on update/delete */
  private slices = new Map<string, EndpointSliceInfo>()
  private draft: { services?: Map<string, ServiceInfo>, endpoints?: Map<string, ReadonlyMap<string, EndpointSliceInfo>>, nodes?: Map<string, NodeInfo>, peers?: Map<string, PeerInfo> } = {}
  private changes = new Map<string, CatalogChange>()
  private source: SnapshotSource

  constructor (initial: CatalogSnapshot = EMPTY_SNAPSHOT) {
    this.current = initial
    this.source = initial.source
    for (const bySlice of initial.endpoints.values()) for (const s of bySlice.values()) this.slices.set(keyOf('endpointSlices', s), s)
  }

  snapshot (): CatalogSnapshot { return this.current }
  get pending (): boolean { return this.changes.size > 0 || this.source !== this.current.source }

  setSource (source: SnapshotSource): void { this.source = source }

  private note (kind: ChangeKind, type: 'upsert' | 'delete', key: string): void {
    this.changes.set(`${kind}\0${key}`, { kind, type, key })
  }

  private map<K extends 'services' | 'endpoints' | 'nodes' | 'peers'> (k: K): NonNullable<typeof this.draft[K]> {
    const d = this.draft as any
    d[k] ??= new Map(this.current[k] as Map<any, any>)
    return d[k]
  }

  private get<K extends ResourceKind> (kind: K, key: string): ItemOf<K> | undefined {
    if (kind === 'endpointSlices') return this.slices.get(key) as ItemOf<K> | undefined
    const m = (this.draft as any)[kind] ?? (this.current as any)[kind]
    return m.get(key)
  }

  upsert<K extends ResourceKind> (kind: K, item: ItemOf<K>): void {
    const key = keyOf(kind, item)
    switch (kind) {
      case 'services': this.map('services').set(key, item as ServiceInfo); this.note('service', 'upsert', key); break
      case 'nodes': this.map('nodes').set(key, item as NodeInfo); this.note('node', 'upsert', key); break
      case 'peers': this.map('peers').set(key, item as PeerInfo); this.note('peer', 'upsert', key); break
      case 'endpointSlices': {
        const slice = item as EndpointSliceInfo
        const old = this.slices.get(key)
        if (old != null && old.serviceName !== slice.serviceName) this.dropSlice(old)
        this.slices.set(key, slice)
        if (slice.serviceName === '') break
        const svc = serviceKey(slice.namespace, slice.serviceName)
        const endpoints = this.map('endpoints')
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
    const endpoints = this.map('endpoints')
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
      case 'services': if (this.map('services').delete(key)) this.note('service', 'delete', key); break
      case 'nodes': if (this.map('nodes').delete(key)) this.note('node', 'delete', key); break
      case 'peers': if (this.map('peers').delete(key)) this.note('peer', 'delete', key); break
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
    const existing = kind === 'endpointSlices' ? [...this.slices.keys()] : [...((this.draft as any)[kind] ?? (this.current as any)[kind]).keys()]
    for (const key of existing) if (!seen.has(key)) this.remove(kind, key)
  }

  /** Publishes the pending changes as a new snapshot; undefined when nothing changed. */
  commit (): { snapshot: CatalogSnapshot, changes: CatalogChange[] } | undefined {
    if (!this.pending) return undefined
    const c = this.current
    this.current = Object.freeze({
      version: c.version + 1,
      source: this.source,
      services: this.draft.services ?? c.services,
      endpoints: this.draft.endpoints ?? c.endpoints,
      nodes: this.draft.nodes ?? c.nodes,
      peers: this.draft.peers ?? c.peers
    })
    const changes = [...this.changes.values()]
    this.draft = {}
    this.changes.clear()
    return { snapshot: this.current, changes }
  }
}

/** The EndpointSlices of a Service (empty when it has none). */
export function endpointsOf (snapshot: CatalogSnapshot, namespace: string, name: string): EndpointSliceInfo[] {
  return [...(snapshot.endpoints.get(serviceKey(namespace, name))?.values() ?? [])]
}
