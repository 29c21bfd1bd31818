// Tunnel gauges read from `edgemesh status` at scrape time: peers by path, UDX path RTTs, relay RTTs and roles.
import { describe, expect, it } from 'vitest'
import { exportTunnelStatus, tunnelSamples, type TunnelStatusView } from '../../agent/tunnel/status-metrics.ts'
import { Metrics } from '../../shared/metrics.ts'

const udx = (rttMs: number): any => ({ rttMs, cwndPackets: 10, inflightBytes: 0, mtu: 1200, retransmits: 0, packetsSent: 1, packetsReceived: 1, bytesSent: 1, bytesReceived: 1 })
const status: TunnelStatusView = {
  relays: [
    { host: '198.51.100.10', peerId: 'R1', role: 'home', udp: 'up', observed: '198.51.100.20:4003', circuit: 'reserved', rttMs: 1.5 },
    { host: '198.51.100.11', peerId: 'R2', role: 'visitor', udp: 'down', observed: null, circuit: 'none', rttMs: 9 }
  ],
  peers: [
    { node: 'b', peerId: 'B', path: 'direct-udp', remote: 'x', rttMs: null, paths: [{ path: 'direct-udp', remote: 'x', streams: 1, openedAt: 0, udx: udx(3) }, { path: 'relay-tcp', remote: 'y', streams: 0, openedAt: 0 }] },
    { node: 'c', peerId: 'C', path: 'relay-udp', remote: 'z', rttMs: 4, paths: [{ path: 'relay-udp', remote: 'z', streams: 2, openedAt: 0, udx: udx(7) }] },
    { node: 'd', peerId: 'D', path: 'idle', remote: null, rttMs: null, paths: [] },
    { node: 'e', peerId: 'E', path: 'direct-tcp', remote: 't', rttMs: null, paths: [{ path: 'direct-tcp', remote: 't', streams: 1, openedAt: 0 }] }
  ]
}

describe('tunnel status metrics', () => {
  it('counts each peer once, by its best path, and takes RTTs from UDX paths and relays that are up', () => {
    const s = tunnelSamples(status)
    expect(s.peersByPath).toEqual({ 'direct-tcp': 1, 'direct-udp': 1, 'relay-udp': 1, 'relay-tcp': 0, idle: 1 })
    expect(s.pathRtts).toEqual([{ peer: 'b', path: 'direct-udp', ms: 3 }, { peer: 'c', path: 'relay-udp', ms: 7 }])
    expect(s.relayRtts).toEqual([{ relay: '198.51.100.10', ms: 1.5 }])
    expect(s.relayRoles).toEqual([{ relay: '198.51.100.10', role: 'home' }, { relay: '198.51.100.11', role: 'visitor' }])
  })

  it('exports the current status on every scrape and forgets peers that went away', async () => {
    const metrics = new Metrics({ processMetrics: false })
    let view = status
    exportTunnelStatus(metrics, () => view)
    let text = await metrics.registry.metrics()
    expect(text).toContain('edgemesh_tunnel_peers{path="direct-udp"} 1')
    expect(text).toContain('edgemesh_tunnel_rtt_ms{peer="c",path="relay-udp"} 7')
    expect(text).toContain('edgemesh_relay_rtt_ms{relay="198.51.100.10"} 1.5')
    expect(text).toContain('edgemesh_tunnel_relays{relay="198.51.100.10",role="home"} 1')
    expect(text).toContain('edgemesh_tunnel_relays{relay="198.51.100.11",role="visitor"} 1')
    view = { relays: [], peers: [status.peers[0]!] }
    text = await metrics.registry.metrics()
    expect(text).toContain('edgemesh_tunnel_peers{path="relay-udp"} 0')
    expect(text).not.toContain('peer="c"')
    expect(text).toContain('# TYPE edgemesh_relay_rtt_ms gauge')
    expect(text).not.toContain('edgemesh_relay_rtt_ms{')
    expect(text).not.toContain('edgemesh_tunnel_relays{')
  })
})
