// Composition of the node-local DNS capability: the listen address on the agent's bridge, the
// cluster zone following the catalog, the pre-encoded response cache following the zone, the
// upstream forwarder, the UDP/TCP server and its metrics.
import type { Logger } from 'pino'
import { Counter, Gauge } from 'prom-client'
import type { AgentConfig } from '../../shared/config.ts'
import { parseHostPort } from '../../shared/host-port.ts'
import type { Metrics } from '../../shared/metrics.ts'
import type { CatalogFeed } from '../catalog/programmed-view.ts'
import { EMPTY_SNAPSHOT } from '../catalog/store.ts'
import { ensureListenAddress } from '../../shared/net-device.ts'
import { ResponseCache } from './response-cache.ts'
import { DnsServer } from './server.ts'
import { Forwarder, upstreamsFromResolvConf, type Upstream } from './upstream.ts'
import { ClusterZone } from './zone.ts'

export type DnsConfig = NonNullable<AgentConfig['dns']>

export interface RunningDns { server: DnsServer, forwarder: Forwarder, zone: ClusterZone, stop: () => Promise<void> }

/** A labelled Prometheus counter whose values are read from plain numbers when scraped. */
function exportCounts (metrics: Metrics, name: string, help: string, label: string, read: () => Record<string, number>): void {
  new Counter({
    name, help, labelNames: [label], registers: [metrics.registry],
    collect () {
      this.reset()
      for (const [value, n] of Object.entries(read())) this.inc({ [label]: value }, n)
    }
  })
}

/** catalog: the live catalog, or (with the proxy on) the view that shows ClusterIP Services once their rules are in */
export async function startDns (opts: { config: DnsConfig, catalog: CatalogFeed | undefined, metrics: Metrics, log: Logger }): Promise<RunningDns> {
  const { config, catalog, metrics, log } = opts
  const listen = parseHostPort(config.listen)
  if (config.device !== '') await ensureListenAddress(config.device, listen.host)
  const upstreams: Upstream[] = config.upstreams != null
    ? config.upstreams.map((u) => { const { host, port } = parseHostPort(u); return { host, port } })
    // never forward to ourselves: a resolv.conf already pointing at the agent would loop
    : await upstreamsFromResolvConf(config.resolvConf, [listen.host]).catch((err: Error) => {
      log.warn({ file: config.resolvConf, err: err.message }, 'cannot read upstream resolvers; names outside the cluster will get SERVFAIL')
      return []
    })
  const zone = ClusterZone.fromSnapshot(catalog?.snapshot() ?? EMPTY_SNAPSHOT, { domain: config.clusterDomain, ttl: config.ttlSeconds })
  const cache = new ResponseCache()
  const unfollow = cache.follow(zone)
  const unsubscribe = catalog?.subscribe((snap, changes) => { zone.apply(snap, changes) }) ?? (() => {})
  const forwarder = new Forwarder({ upstreams, timeoutMs: config.upstreamTimeoutMs, cacheEntries: config.cacheEntries, log })
  await forwarder.start()
  const server = new DnsServer({ host: listen.host, port: listen.port, zone, cache, forwarder, log })
  await server.start()

  // plain counters on the hot path, exported at scrape time
  const s = server.stats
  const f = forwarder.stats
  exportCounts(metrics, 'edgemesh_dns_queries_total', 'DNS queries by outcome: cluster (answered from the catalog), forwarded, error (FORMERR/NOTIMP/BADVERS answered), dropped (malformed beyond an answer)',
    'result', () => ({ cluster: s.cluster, forwarded: s.forwarded, error: s.errors, dropped: s.dropped }))
  exportCounts(metrics, 'edgemesh_dns_upstream_total', 'Forwarded DNS queries: cache hits, upstream timeouts, SERVFAIL answers, malformed upstream answers',
    'event', () => ({ cache_hit: f.cacheHits, timeout: f.upstreamTimeouts, servfail: f.servfails, malformed: f.malformed }))
  new Gauge({ name: 'edgemesh_dns_zone_generation', help: 'Changes applied to the cluster DNS zone', registers: [metrics.registry], collect () { this.set(zone.generation) } })

  log.info({ listen: `${server.address.host}:${server.address.port}`, device: config.device || null, domain: config.clusterDomain, upstreams: upstreams.map((u) => `${u.host}:${u.port}`) }, 'DNS ready')
  return {
    server,
    forwarder,
    zone,
    stop: async () => {
      unsubscribe()
      unfollow()
      await server.stop()
      forwarder.stop()
    }
  }
}
