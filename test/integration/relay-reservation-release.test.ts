// A circuit reservation goes with its holder's last connection (server/relay-host.ts
// releaseReservationsOfGonePeers): libp2p kept it for its whole TTL, so an agent that moved to
// another home relay still counted against the relay's caps for an hour.
import { afterEach, describe, expect, it } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { startRelayHost } from '../../server/relay-host.ts'
import { createAgentNode, type AgentNode } from '../../agent/tunnel/node.ts'
import { createLogger } from '../../shared/logging.ts'
import { Metrics } from '../../shared/metrics.ts'
import { eventually } from '../lab/wait.ts'

const log = createLogger({ name: 'test', level: 'silent' })
const stops: Array<() => Promise<void>> = []
afterEach(async () => { for (const stop of stops.splice(0).reverse()) await stop().catch(() => {}) })

async function relay (): Promise<Awaited<ReturnType<typeof startRelayHost>>> {
  const host = await startRelayHost({
    privateKey: await generateKeyPair('Ed25519'), host: '127.0.0.1', tcpPort: 0, announce: [],
    limits: { maxReservations: 100, maxReservationsPerIp: 100, reservationTtlSeconds: 3_600, circuitDurationSeconds: 0, circuitDataBytes: 0 },
    connections: { maxConnections: 100, inboundConnectionThreshold: 100, maxIncomingPendingConnections: 100 },
    log, metrics: new Metrics({ processMetrics: false })
  })
  stops.push(async () => { await host.stop() })
  return host
}

async function agent (): Promise<AgentNode> {
  const node = await createAgentNode({ privateKey: await generateKeyPair('Ed25519'), listenHost: '127.0.0.1', tcpPort: 0, isAllowedPeer: () => true, log, metrics: new Metrics({ processMetrics: false }) })
  stops.push(async () => { await node.stop() })
  return node
}

describe('relay circuit reservations', () => {
  it('are released when the holder disconnects, and granted again when it comes back', async () => {
    const host = await relay()
    const tcp = host.getMultiaddrs().find((a) => a.toString().includes('/tcp/'))!
    const circuit = multiaddr(`${tcp.toString().replace(/\/p2p\/.*$/, '')}/p2p/${host.peerId.toString()}/p2p-circuit`)
    const [a, b] = await Promise.all([agent(), agent()])
    const tm = (node: AgentNode): any => (node as any).components.transportManager
    await Promise.all([tm(a).listen([circuit]), tm(b).listen([circuit])])
    await eventually(async () => { expect(host.services.relay.reservations.size).toBe(2) }, 10_000, 20)

    await a.hangUp(host.peerId)
    await eventually(async () => {
      expect(host.services.relay.reservations.has(a.peerId)).toBe(false)
      expect(host.services.relay.reservations.has(b.peerId)).toBe(true)
    }, 10_000, 20)

    await tm(a).listen([circuit])
    await eventually(async () => { expect(host.services.relay.reservations.has(a.peerId)).toBe(true) }, 10_000, 20)
    expect(host.services.relay.reservations.size).toBe(2)
  })
})
