// The catalog: Services, EndpointSlices and the mesh's peer records from the Kubernetes
// API, published as immutable snapshots plus change events for tunnel, DNS, proxy and SOCKS5.
// The last complete snapshot is kept on disk so an agent that starts while the API is
// unreachable serves what it knew, and resyncs (emitting only real differences) when it returns.
import type { Logger } from 'pino'
import type { Metrics } from '../../shared/metrics.ts'
import type { KubeClient } from './kube-client.ts'
import { toEndpointSlice, toPeer, toService, PEER_LABEL } from './model.ts'
import { runReflector, type ResourceSpec } from './reflector.ts'
import { CatalogStore, countEndpoints, type CatalogChange, type CatalogSnapshot, type ResourceKind } from './store.ts'
import { readSnapshotFile, writeSnapshotFile } from './snapshot-file.ts'
import { CatalogLag } from './lag.ts'

export type CatalogListener = (snapshot: CatalogSnapshot, changes: CatalogChange[]) => void

export interface CatalogOptions {
  client: KubeClient
  /** namespace of the peer records */
  namespace: string
  snapshotFile?: string
  /** how long start() waits for the API before serving the disk snapshot */
  syncTimeoutMs: number
  /** minimum time between two snapshot writes */
  persistIntervalMs?: number
  log: Logger
  metrics: Metrics
  watchTimeoutSeconds?: [number, number]
  maxBackoffMs?: number
  /** called after a full LIST was applied (start-up, relist): a burst of garbage just died */
  onBulkLoad?: () => void
}

const nsName = (o: any): string => `${String(o?.metadata?.namespace ?? '')}/${String(o?.metadata?.name ?? '')}`
const name = (o: any): string => String(o?.metadata?.name ?? '')

export function catalogResources (namespace: string): Array<ResourceSpec<ResourceKind>> {
  return [
    { kind: 'services', path: '/api/v1/services', transform: toService, keyOf: nsName },
    { kind: 'endpointSlices', path: '/apis/discovery.k8s.io/v1/endpointslices', transform: toEndpointSlice, keyOf: nsName },
    // the only filtered watch: it shares the leases watch cache with every kubelet's node lease
    // (renewed every 10 s), so only bookmarks keep its resume point inside the cache's window
    { kind: 'peers', path: `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases`, labelSelector: `${PEER_LABEL}=true`, transform: toPeer, keyOf: name, bookmarks: true }
  ] as Array<ResourceSpec<ResourceKind>>
}

export class Catalog {
  private readonly opts: CatalogOptions
  private readonly store = new CatalogStore()
  private readonly listeners = new Set<CatalogListener>()
  private readonly abort = new AbortController()
  private readonly listed = new Set<ResourceKind>()
  private readonly resources: Array<ResourceSpec<ResourceKind>>
  private running: Array<Promise<void>> = []
  /** commits are held back until there is something whole to serve (API synced or disk loaded) */
  private serving = false
  private commitScheduled = false
  private persistTimer: NodeJS.Timeout | undefined
  private persistDirty = false
  private lastPersist = 0
  private persisting: Promise<void> = Promise.resolve()
  private wake: (() => void) | undefined
  private firstFailureSeen = false
  /** ms from start() to the first complete sync from the API, once it happened */
  syncedAfterMs: number | undefined
  private startedAt = 0
  /** edgemesh_catalog_lag_seconds */
  readonly lag: CatalogLag

  constructor (opts: CatalogOptions) {
    this.opts = opts
    this.resources = catalogResources(opts.namespace)
    this.lag = new CatalogLag(this.resources.map((r) => r.kind))
    this.lag.export(opts.metrics)
  }

  get synced (): boolean { return this.listed.size === this.resources.length }
  snapshot (): CatalogSnapshot { return this.store.snapshot() }

  /** Called after every published snapshot; returns an unsubscribe function. */
  subscribe (fn: CatalogListener): () => void {
    this.listeners.add(fn)
    return () => { this.listeners.delete(fn) }
  }

  /**
   * Starts the reflectors and resolves once there is a catalog to serve: the API's (all
   * resources listed), or the disk snapshot after the first failure or syncTimeoutMs.
   */
  async start (): Promise<void> {
    this.startedAt = performance.now()
    const { log, metrics, client } = this.opts
    const sink = {
      replace: (kind: ResourceKind, items: any[]) => { this.store.replace(kind, items); this.scheduleCommit() },
      upsert: (kind: ResourceKind, item: any) => { this.store.upsert(kind, item); this.scheduleCommit() },
      remove: (kind: ResourceKind, key: string) => { this.store.remove(kind, key); this.scheduleCommit() },
      listed: (kind: ResourceKind) => {
        this.listed.add(kind)
        this.opts.onBulkLoad?.()
        if (this.synced) {
          this.store.setSource('api')
          metrics.catalogFromDisk.set(0)
          this.serving = true
          this.commitNow()
        }
        if (this.synced && this.syncedAfterMs === undefined) {
          this.syncedAfterMs = performance.now() - this.startedAt
          log.info({ ms: Math.round(this.syncedAfterMs), ...this.counts() }, 'catalog synced from the API')
        }
        this.wake?.()
      },
      failed: (kind: ResourceKind) => {
        this.lag.lost(kind)
        if (!this.firstFailureSeen) { this.firstFailureSeen = true; this.wake?.() }
      },
      heard: (kind: ResourceKind) => { this.lag.heard(kind) }
    }
    const reflectorOpts = {
      client, log, metrics, signal: this.abort.signal,
      ...(this.opts.watchTimeoutSeconds != null ? { watchTimeoutSeconds: this.opts.watchTimeoutSeconds } : {}),
      ...(this.opts.maxBackoffMs != null ? { maxBackoffMs: this.opts.maxBackoffMs } : {})
    }
    this.running = this.resources.map(async (spec) => { await runReflector(spec, sink, reflectorOpts) })

    const deadline = Date.now() + this.opts.syncTimeoutMs
    while (!this.synced && !this.firstFailureSeen && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, deadline - Date.now())
        this.wake = () => { clearTimeout(t); resolve() }
      })
    }
    this.wake = undefined
    if (this.synced) return
    await this.serveFromDisk()
  }

  private async serveFromDisk (): Promise<void> {
    const { log, metrics } = this.opts
    const file = this.opts.snapshotFile
    const saved = file != null ? await readSnapshotFile(file).catch((err: Error) => { log.warn({ file, err: err.message }, 'catalog snapshot on disk is unreadable; ignoring it'); return undefined }) : undefined
    if (this.synced) { this.commitNow(); return } // the API answered while we read the file
    if (saved != null) {
      // only kinds the API has not listed yet come from disk
      for (const kind of ['services', 'endpointSlices', 'peers'] as const) {
        if (!this.listed.has(kind)) { this.store.replace(kind, saved[kind] as any[]); this.lag.fromDisk(kind, saved.savedAt) }
      }
      this.store.setSource('disk')
      metrics.catalogFromDisk.set(1)
      log.warn({ file, savedAt: new Date(saved.savedAt).toISOString(), ...this.countsOf(saved) }, 'Kubernetes API unreachable: serving the catalog snapshot from disk until it returns')
    } else {
      log.warn({ file }, 'Kubernetes API unreachable and no catalog snapshot on disk: serving an empty catalog until it returns')
    }
    this.serving = true
    this.commitNow()
  }

  private counts (): Record<string, number> {
    const s = this.store.snapshot()
    return { services: s.services.size, endpoints: countEndpoints(s).endpoints, peers: s.peers.size }
  }

  private countsOf (saved: { services: unknown[], endpointSlices: unknown[], peers: unknown[] }): Record<string, number> {
    return { services: saved.services.length, endpointSlices: saved.endpointSlices.length, peers: saved.peers.length }
  }

  private scheduleCommit (): void {
    if (!this.serving || this.commitScheduled) return
    this.commitScheduled = true
    // one snapshot per burst of events that arrive in the same turn of the event loop
    setImmediate(() => { this.commitScheduled = false; this.commitNow() })
  }

  private commitNow (): void {
    const result = this.store.commit()
    if (result == null) return
    const { snapshot, changes } = result
    const m = this.opts.metrics.catalogObjects
    m.set({ kind: 'services' }, snapshot.services.size)
    m.set({ kind: 'endpoint_services' }, snapshot.endpoints.size)
    m.set({ kind: 'peers' }, snapshot.peers.size)
    for (const fn of this.listeners) {
      try { fn(snapshot, changes) } catch (err) { this.opts.log.error({ err: (err as Error).message }, 'catalog listener failed') }
    }
    if (snapshot.source === 'api') this.schedulePersist()
  }

  private schedulePersist (): void {
    if (this.opts.snapshotFile == null) return
    this.persistDirty = true
    if (this.persistTimer != null) return
    const wait = Math.max(0, this.lastPersist + (this.opts.persistIntervalMs ?? 30_000) - Date.now())
    this.persistTimer = setTimeout(() => { this.persistTimer = undefined; void this.persist() }, wait)
    this.persistTimer.unref()
  }

  private async persist (): Promise<void> {
    const file = this.opts.snapshotFile
    if (file == null || !this.persistDirty) return
    this.persistDirty = false
    this.lastPersist = Date.now()
    const snap = this.store.snapshot()
    this.persisting = this.persisting.then(async () => { await writeSnapshotFile(file, snap) }).catch((err: Error) => {
      this.opts.log.warn({ file, err: err.message }, 'cannot write the catalog snapshot; will retry on the next change')
    })
    await this.persisting
  }

  async stop (): Promise<void> {
    this.abort.abort()
    await Promise.allSettled(this.running)
    if (this.persistTimer != null) { clearTimeout(this.persistTimer); this.persistTimer = undefined }
    if (this.store.snapshot().source === 'api') await this.persist()
    await this.persisting
  }
}
