// Idle circuit relay HOP streams (opened, never sent a request) are capped per connection
// (server/hop-handshakes.ts): one connection held up to yamux's 1,000, ~43 KiB each, until the
// 30 s hop timeout. A real circuit through the relay still works while the cap is reached.
import { afterEach, describe, expect, it } from 'vitest'
import { multiaddr } from '@multiformats/multiaddr'
import { HOP_PROTOCOL, MAX_HOP_HANDSHAKES_PER_CONNECTION } from '../../server/hop-handshakes.ts'
import type { AgentNode } from '../../agent/tunnel/node.ts'
import { Metrics } from '../../shared/metrics.ts'
import { eventually } from '../lab/wait.ts'
import { refusals, testAgentNode, testRelayHost } from './relay-host-fixture.ts'

const stops: Array<() => Promise<void>> = []
afterEach(async () => { for (const stop of stops.splice(0).reverse()) await stop().catch(() => {}) })
const agent = async (): Promise<AgentNode> => await testAgentNode(stops)

describe('relay HOP handshakes', () => {
  it('one connection holds at most the cap of idle HOP streams; a circuit dial still works', async () => {
    const metrics = new Metrics({ processMetrics: false })
    const host = await testRelayHost(stops, { metrics })
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
