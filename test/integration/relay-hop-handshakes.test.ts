// Idle circuit relay HOP streams (opened, never sent a request) are capped per connection
// (server/hop-handshakes.ts): one connection held up to yamux's 1,000, ~43 KiB each, until the
// 30 s hop timeout. A real circuit through the relay still works while the cap is reached.
import { afterEach, describe, expect, it } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { startRelayHost } from '../../server/relay-host.ts'
import { HOP_PROTOCOL, MAX_HOP_HANDSHAKES_PER_CONNECTION } from '../../server/hop-handshakes.ts'
import { createAgentNode, type AgentNode } from '../../agent/tunnel/node.ts'
import { createLogger } from '../../shared/logging.ts'
import { Metrics } from '../../shared/metrics.ts'
import { eventually } from '../lab/wait.ts'

const log = createLogger({ name: 'test', level: 'silent' })
const stops: Array<() => Promise<void>> = []
afterEach(async () => { for (const stop of stops.splice(0).reverse()) await stop().catch(() => {}) })

async function agent (): Promise<AgentNode> {
  const node = await createAgentNode({ privateKey: await generateKeyPair('Ed25519'), listenHost: '127.0.0.1', tcpPort: 0, isAllowedPeer: () => true, log, metrics: new Metrics({ processMetrics: false }) })
  stops.push(async () => { await node.stop() })
  return node
}

async function refusals (metrics: Metrics, reason: string): Promise<number> {
  const m = await metrics.relayRefusals.get()
  return m.values.find((v) => v.labels.reason === reason)?.value ?? 0
}

describe('relay HOP handshakes', () => {
  it('one connection holds at most the cap of idle HOP streams; a circuit dial still works', async () => {
    const metrics = new Metrics({ processMetrics: false })
    const host = await startRelayHost({
      privateKey: await generateKeyPair('Ed25519'), host: '127.0.0.1', tcpPort: 0, announce: [],
      limits: { maxReservations: 100, maxReservationsPerIp: 100, reservationTtlSeconds: 3_600, circuitDurationSeconds: 0, circuitDataBytes: 0 },
      connections: { maxConnections: 100, inboundConnectionThreshold: 100, maxIncomingPendingConnections: 100 },
      log, metrics
    })
    stops.push(async () => { await host.stop() })
    const tcp = host.getMultiaddrs().find((a) => a.toString().includes('/tcp/'))!
    const relayAddr = multiaddr(`${tcp.toString().replace(/\/p2p\/.*$/, '')}/p2p/${host.peerId.toString()}`)

    // the attacker: opens HOP streams (protocol negotiated) and never sends a request
    const attacker = await agent()
    const conn = await attacker.dial(relayAddr)
    const opened = 3 * MAX_HOP_HANDSHAKES_PER_CONNECTION
    await Promise.allSettled(Array.from({ length: opened }, async () => await conn.newStream(HOP_PROTOCOL, { negotiateFully: true, maxOutboundStreams: 10_000 })))
    const idleHopStreams = (): number => host.getConnections(attacker.peerId)
      .flatMap((c) => c.streams).filter((s) => s.protocol === HOP_PROTOCOL && s.status === 'open').length
    await eventually(async () => {
      expect(await refusals(metrics, 'circuit-hop-handshakes-per-connection')).toBe(opened - MAX_HOP_HANDSHAKES_PER_CONNECTION)
      expect(idleHopStreams()).toBe(MAX_HOP_HANDSHAKES_PER_CONNECTION)
    }, 10_000, 20)

    // a real circuit: b reserves, a dials b through the relay while the attacker's streams are held
    const circuit = multiaddr(`${relayAddr.toString()}/p2p-circuit`)
    const [a, b] = await Promise.all([agent(), agent()])
    const tm = (node: AgentNode): any => (node as any).components.transportManager
    await tm(b).listen([circuit])
    await eventually(async () => { expect(host.services.relay.reservations.has(b.peerId)).toBe(true) }, 10_000, 20)
    const relayed = await a.dial(multiaddr(`${circuit.toString()}/p2p/${b.peerId.toString()}`))
    expect(relayed.remotePeer.equals(b.peerId)).toBe(true)
    expect(relayed.remoteAddr.toString()).toContain('/p2p-circuit')
    await eventually(async () => {
      expect(b.getConnections(a.peerId).some((c) => c.remoteAddr.toString().includes('/p2p-circuit') && c.status === 'open')).toBe(true)
    }, 10_000, 20)
    expect(idleHopStreams()).toBe(MAX_HOP_HANDSHAKES_PER_CONNECTION)
  }, 60_000)
})
