// The proxy's Prometheus metrics, registered on the agent's registry.
import { Counter, Gauge, Histogram } from 'prom-client'
import type { Metrics } from '../../shared/metrics.ts'

export class ProxyMetrics {
  /** connections and UDP flows the agent carried, by where they went and how the first dial went */
  readonly connections: Counter<'protocol' | 'path' | 'result'>
  /** requests other agents sent to this one */
  readonly remote: Counter<'result'>
  /** tunnel streams spliced to a socket that ended early, by side (local: the Service's listener, remote: serving a peer) and cause */
  readonly streamFailures: Counter<'side' | 'cause'>
  readonly datagrams: Counter<'direction' | 'result'>
  readonly syncs: Counter<'kind' | 'result'>
  readonly syncMs: Histogram<'kind'>
  readonly servicePorts: Gauge<'mode'>
  readonly listeners: Gauge
  readonly openConnections: Gauge

  /** openConnections: TCP connections and UDP flows open now on the agent's listeners (read at scrape time) */
  constructor (metrics: Metrics, openConnections: () => number = () => 0) {
    const registers = [metrics.registry]
    this.connections = new Counter({ name: 'edgemesh_proxy_connections_total', help: 'Service connections (TCP) and flows (UDP) the agent proxied, by path (local endpoint dialled by the agent, or tunnel) and result', labelNames: ['protocol', 'path', 'result'], registers })
    this.remote = new Counter({ name: 'edgemesh_proxy_remote_requests_total', help: 'Proxy requests from other agents: ok, refused (endpoint not on this node), dial-failed, bad-request', labelNames: ['result'], registers })
    this.streamFailures = new Counter({ name: 'edgemesh_proxy_stream_failures_total', help: 'Proxied TCP connections whose tunnel stream or socket failed mid-transfer, by side (local listener or remote serving side) and cause (stream-buffer, stream-reset, stream-aborted, socket-error, socket-closed)', labelNames: ['side', 'cause'], registers })
    this.datagrams = new Counter({ name: 'edgemesh_proxy_udp_datagrams_total', help: 'UDP datagrams carried for Services (request = towards the endpoint), dropped when a tunnel stream is congested or a flow not yet open overflows', labelNames: ['direction', 'result'], registers })
    this.syncs = new Counter({ name: 'edgemesh_proxy_syncs_total', help: 'iptables syncs by kind (full, incremental, none) and result', labelNames: ['kind', 'result'], registers })
    this.syncMs = new Histogram({ name: 'edgemesh_proxy_sync_duration_ms', help: 'Whole proxy sync: plan, listeners, rule generation, hook check, iptables-restore', labelNames: ['kind'], buckets: [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000], registers })
    this.servicePorts = new Gauge({ name: 'edgemesh_proxy_service_ports', help: 'Programmed service ports by mode: kernel (DNAT only), mixed (DNAT + agent), agent (agent only), none (no endpoint)', labelNames: ['mode'], registers })
    this.listeners = new Gauge({ name: 'edgemesh_proxy_listeners', help: 'Agent listeners for service ports with tunnel endpoints or agent-only policies', registers })
    this.openConnections = new Gauge({ name: 'edgemesh_proxy_open_connections', help: 'Service connections (TCP) and flows (UDP) open now through the agent\'s listeners (connections DNATed by the kernel to local endpoints are not seen)', registers, collect () { this.set(openConnections()) } })
  }
}
