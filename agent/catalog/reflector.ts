// LIST then WATCH one resource into the catalog store, like client-go's reflector: a watch that
// ends (server timeout) resumes from the last resourceVersion; 410 Gone (history compacted, or a
// restarted apiserver's fresh watch cache) relists; any other failure retries with capped,
// jittered backoff and never stops for good. Bookmarks (filtered watches only) keep the resume
// point fresh.
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import type { Metrics } from '../../shared/metrics.ts'
import { KubeApiError, type KubeClient, type WatchEvent } from './kube-client.ts'
import type { ItemOf, ResourceKind } from './store.ts'

export interface ResourceSpec<K extends ResourceKind> {
  kind: K
  /** collection path, e.g. /api/v1/services */
  path: string
  labelSelector?: string
  transform: (obj: unknown) => ItemOf<K> | undefined
  /** store key of a raw object (for DELETED events, which need no transform) */
  keyOf: (obj: any) => string
  /**
   * Ask for watch bookmarks. Only a filtered watch (labelSelector) needs them: it does not see
   * the events of the objects it filters out, so without bookmarks its resourceVersion falls
   * behind, out of the watch cache's window, and the next re-watch is a 410 and a full relist.
   * An unfiltered watch sees every event of its resource: its resume point is always current.
   */
  bookmarks?: boolean
}

export interface ReflectorSink<K extends ResourceKind> {
  replace(kind: K, items: Array<ItemOf<K>>): void
  upsert(kind: K, item: ItemOf<K>): void
  remove(kind: K, key: string): void
  /** after each successful LIST (the first one completes this resource's initial sync) */
  listed(kind: K): void
  failed(kind: K, err: Error): void
  /** the API answered about this resource: a LIST, a watch opening, an event or a bookmark */
  heard?(kind: K): void
}

export interface ReflectorOptions {
  client: KubeClient
  log: Logger
  metrics: Metrics
  signal: AbortSignal
  /** server-side watch timeout range in seconds (randomised so watches do not all end together) */
  watchTimeoutSeconds?: [number, number]
  maxBackoffMs?: number
}

class ExpiredError extends Error {}

const isExpired = (err: unknown): boolean =>
  err instanceof ExpiredError || (err instanceof KubeApiError && (err.status === 410 || err.reason === 'Expired' || err.reason === 'Gone'))

export async function runReflector<K extends ResourceKind> (spec: ResourceSpec<K>, sink: ReflectorSink<K>, opts: ReflectorOptions): Promise<void> {
  const { client, log, metrics, signal } = opts
  const [minTimeout, maxTimeout] = opts.watchTimeoutSeconds ?? [300, 600]
  const maxBackoff = opts.maxBackoffMs ?? 30_000
  const resource = spec.kind
  let rv = ''
  let listReason = 'initial'
  let backoff = 0
  let failures = 0

  const onBytes = (n: number): void => { metrics.catalogWatchBytes.inc({ resource }, n) }
  const onEvent = (ev: WatchEvent): void => {
    const obj = ev.object
    metrics.catalogWatchEvents.inc({ resource, type: ev.type })
    if (ev.type !== 'ERROR') sink.heard?.(resource)
    switch (ev.type) {
      case 'ADDED':
      case 'MODIFIED': {
        const item = spec.transform(obj)
        if (item != null) sink.upsert(resource, item)
        else metrics.catalogErrors.inc({ resource, reason: 'malformed-object' })
        break
      }
      case 'DELETED': sink.remove(resource, spec.keyOf(obj)); break
      case 'BOOKMARK': break
      case 'ERROR':
        if (obj?.code === 410) throw new ExpiredError(`watch expired: ${String(obj?.message)}`)
        throw new KubeApiError(Number(obj?.code ?? 0), String(obj?.reason ?? 'WatchError'), `watch error: ${String(obj?.message)}`)
      default:
        metrics.catalogErrors.inc({ resource, reason: 'unknown-event' })
        return
    }
    const next = obj?.metadata?.resourceVersion
    if (typeof next === 'string' && next !== '') rv = next
  }

  while (!signal.aborted) {
    try {
      if (rv === '') {
        const items: Array<ItemOf<K>> = []
        let malformed = 0
        const list = await client.list(spec.path, {
          signal,
          ...(spec.labelSelector != null ? { labelSelector: spec.labelSelector } : {}),
          onPage: (page) => {
            for (const raw of page) {
              const item = spec.transform(raw)
              if (item != null) items.push(item)
              else malformed++
            }
          }
        })
        metrics.catalogLists.inc({ resource, reason: listReason })
        if (malformed > 0) metrics.catalogErrors.inc({ resource, reason: 'malformed-object' }, malformed)
        sink.replace(resource, items)
        rv = list.resourceVersion
        sink.heard?.(resource)
        sink.listed(resource)
        if (listReason !== 'initial' || failures > 0) log.info({ resource, items: items.length, reason: listReason }, 'catalog relisted')
      }
      const timeoutSeconds = minTimeout + Math.floor(Math.random() * (maxTimeout - minTimeout + 1))
      await client.watch(spec.path, { resourceVersion: rv, timeoutSeconds, onBytes, bookmarks: spec.bookmarks === true, ...(spec.labelSelector != null ? { labelSelector: spec.labelSelector } : {}) }, onEvent, signal, () => { sink.heard?.(resource) })
      backoff = 0
      failures = 0
    } catch (err) {
      if (signal.aborted) break
      if (isExpired(err)) {
        log.info({ resource, resourceVersion: rv }, 'catalog watch expired (410 Gone); relisting')
        rv = ''
        listReason = 'expired'
        continue
      }
      failures++
      metrics.catalogErrors.inc({ resource, reason: err instanceof KubeApiError ? err.reason : 'other' })
      sink.failed(resource, err as Error)
      if (rv === '') listReason = 'error'
      backoff = Math.min(maxBackoff, Math.max(200, backoff * 2))
      const delay = Math.round(backoff * (0.8 + Math.random() * 0.4))
      // first failure, then every 10th: an unreachable API should not flood the log
      if (failures === 1 || failures % 10 === 0) log.warn({ resource, err: (err as Error).message, failures, retryInMs: delay }, 'catalog list/watch failed; retrying')
      try { await sleep(delay, undefined, { signal }) } catch { break }
    }
  }
}
