// Tunnel numbers read from the tunnel's status at scrape time (what `edgemesh status` shows):
// peers by the path their new streams take, the smoothed RTT of each open UDX tunnel path, and
// the round trip of the last registration with each relay, each relay's role (home, visitor, idle,
// down: relay-set.ts). Nothing is kept between scrapes, so
// a peer or relay that went away leaves no stale series.
import { Gauge } from 'prom-client'
import type { Metrics } from '../../shared/metrics.ts'
import type { PeerStatus, RelayStatus } from './tunnel.ts'

export interface TunnelStatusView { peers: PeerStatus[], relays: RelayStatus[] }

export interface TunnelSamples {
  /** peers by the path new streams use ('idle': no open connection) */
  peersByPath: Record<string, number>
  /** UDX smoothed RTT per open UDP path (TCP paths have no transport RTT) */
  pathRtts: Array<{ peer: string, path: string, ms: number }>
  relayRtts: Array<{ relay: string, ms: number }>
  relayRoles: Array<{ relay: string, role: string }>
}

export const PEER_PATHS = ['direct-tcp', 'direct-udp', 'relay-udp', 'relay-tcp', 'idle'] as const

export function tunnelSamples (s: TunnelStatusView): TunnelSamples {
  const peersByPath: Record<string, number> = Object.fromEntries(PEER_PATHS.map((p) => [p, 0]))
  const pathRtts: TunnelSamples['pathRtts'] = []
  for (const peer of s.peers) {
    peersByPath[peer.path] = (peersByPath[peer.path] ?? 0) + 1
    for (const p of peer.paths) {
      if (p.udx != null && Number.isFinite(p.udx.rttMs)) pathRtts.push({ peer: peer.node, path: p.path, ms: p.udx.rttMs })
    }
  }
  const relayRtts = s.relays.filter((r) => r.rttMs != null && r.udp === 'up').map((r) => ({ relay: r.host, ms: r.rttMs! }))
  const relayRoles = s.relays.map((r) => ({ relay: r.host, role: r.role }))
  return { peersByPath, pathRtts, relayRtts, relayRoles }
}

export function exportTunnelStatus (metrics: Metrics, status: () => TunnelStatusView): void {
  const registers = [metrics.registry]
  // each gauge reads the status itself: a few hundred peers cost microseconds, and no cache can go stale
  const samples = (): TunnelSamples => tunnelSamples(status())
  new Gauge({
    name: 'edgemesh_tunnel_peers',
    help: 'Known peers by the path their new streams take now (direct-tcp, direct-udp, relay-udp, relay-tcp; idle: no open connection)',
    labelNames: ['path'] as const,
    registers,
    collect () {
      this.reset()
      for (const [path, n] of Object.entries(samples().peersByPath)) this.set({ path }, n)
    }
  })
  new Gauge({
    name: 'edgemesh_tunnel_rtt_ms',
    help: 'Smoothed round-trip time of each open UDP tunnel path (direct-udp, relay-udp) from its UDX congestion control, whole milliseconds',
    labelNames: ['peer', 'path'] as const,
    registers,
    collect () {
      this.reset()
      for (const r of samples().pathRtts) this.set({ peer: r.peer, path: r.path }, r.ms)
    }
  })
  new Gauge({
    name: 'edgemesh_relay_rtt_ms',
    help: 'Round trip of the last registration with each relay over UDP',
    labelNames: ['relay'] as const,
    registers,
    collect () {
      this.reset()
      for (const r of samples().relayRtts) this.set({ relay: r.relay }, r.ms)
    }
  })
  new Gauge({
    name: 'edgemesh_tunnel_relays',
    help: 'Each configured relay by its role for this agent (1): home (registered and reserved there), visitor (registered to reach peers homed there), idle, down (lost)',
    labelNames: ['relay', 'role'] as const,
    registers,
    collect () {
      this.reset()
      for (const r of samples().relayRoles) this.set({ relay: r.relay, role: r.role }, 1)
    }
  })
}
