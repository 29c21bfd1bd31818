// The SOCKS5 server's Prometheus metrics, registered on the agent's registry.
import { Counter, Gauge } from 'prom-client'
import type { Metrics } from '../../shared/metrics.ts'

export class Socks5Metrics {
  /** handshakes that reached a target, by kind and outcome (ok or the refusal reason) */
  readonly connections: Counter<'target' | 'result'>
  /** every refusal, the handshake's ones included (auth-failed, handshake-timeout, ...) */
  readonly refusals: Counter<'reason'>
  readonly open: Gauge
  /** node requests other agents sent this one (the serving side) */
  readonly remote: Counter<'result'>
  readonly streamFailures: Counter<'side' | 'cause'>

  constructor (metrics: Metrics) {
    const registers = [metrics.registry]
    this.connections = new Counter({ name: 'edgemesh_socks5_connections_total', help: 'SOCKS5 CONNECT requests by target kind (node, service, none) and result: ok or the refusal reason', labelNames: ['target', 'result'], registers })
    this.refusals = new Counter({ name: 'edgemesh_socks5_refusals_total', help: 'SOCKS5 connections refused, by reason (handshake: malformed, no-acceptable-method, auth-failed, handshake-timeout, command-not-supported, address-type-not-supported; target: unknown-target, port-not-allowed, remote-port-not-allowed, service-port-not-allowed, node-not-serving, node-unreachable, no-endpoint, connection-refused, connect-timeout, general-failure, too-many-connections)', labelNames: ['reason'], registers })
    this.open = new Gauge({ name: 'edgemesh_socks5_open_connections', help: 'SOCKS5 connections open now (handshaking or spliced)', registers })
    this.remote = new Counter({ name: 'edgemesh_socks5_remote_requests_total', help: 'SOCKS5 node requests from other agents: ok, port-not-allowed, refused, timeout, unreachable, bad-request, not-this-node, failed', labelNames: ['result'], registers })
    this.streamFailures = new Counter({ name: 'edgemesh_socks5_stream_failures_total', help: 'SOCKS5 connections over the tunnel that failed mid-transfer, by side (local: the SOCKS server, remote: the serving agent) and cause', labelNames: ['side', 'cause'], registers })
  }
}
