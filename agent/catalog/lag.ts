// How far behind the Kubernetes API each part of the catalog may be, exported as
// edgemesh_catalog_lag_seconds{resource}. While a resource's watch is open the apiserver pushes
// every change at once, so its lag is 0. Once its list/watch fails, the lag is the time since the
// catalog last heard from the API about it (a LIST, a watch opening, an event or a bookmark), or
// since the disk snapshot it serves was saved, or since the agent started if it had neither.
// A watch that died silently counts as open until the client's idle timeout notices it.
import { Gauge } from 'prom-client'
import type { Metrics } from '../../shared/metrics.ts'
import type { ResourceKind } from './store.ts'

interface ResourceLag { live: boolean, lastHeardAt: number }

export class CatalogLag {
  private readonly byKind = new Map<ResourceKind, ResourceLag>()

  constructor (kinds: readonly ResourceKind[], startedAt = Date.now()) {
    for (const kind of kinds) this.byKind.set(kind, { live: false, lastHeardAt: startedAt })
  }

  /** The API answered about this resource: a LIST completed, a watch opened or delivered an event. */
  heard (kind: ResourceKind, now = Date.now()): void {
    const s = this.byKind.get(kind)
    if (s != null) { s.live = true; s.lastHeardAt = now }
  }

  /** Its list or watch failed: from now on the lag grows from the last time it heard. */
  lost (kind: ResourceKind): void {
    const s = this.byKind.get(kind)
    if (s != null) s.live = false
  }

  /** The resource is served from a disk snapshot saved at savedAt (only while the API is not heard). */
  fromDisk (kind: ResourceKind, savedAt: number): void {
    const s = this.byKind.get(kind)
    if (s != null && !s.live) s.lastHeardAt = savedAt
  }

  /** Seconds this resource's view may be behind the API (never negative). */
  lagSeconds (kind: ResourceKind, now = Date.now()): number {
    const s = this.byKind.get(kind)
    if (s == null || s.live) return 0
    return Math.max(0, now - s.lastHeardAt) / 1000
  }

  kinds (): ResourceKind[] { return [...this.byKind.keys()] }

  /** Registers the gauge, computed at scrape time. */
  export (metrics: Metrics): void {
    const lag = this
    new Gauge({
      name: 'edgemesh_catalog_lag_seconds',
      help: 'Seconds the catalog may be behind the Kubernetes API per resource: 0 while its watch is open, else the time since the API was last heard (or the disk snapshot was saved)',
      labelNames: ['resource'] as const,
      registers: [metrics.registry],
      collect () {
        const now = Date.now()
        for (const kind of lag.kinds()) this.set({ resource: kind }, lag.lagSeconds(kind, now))
      }
    })
  }
}
