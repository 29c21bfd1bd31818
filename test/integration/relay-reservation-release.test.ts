// A circuit reservation goes with its holder's last connection (server/relay-host.ts
// releaseReservationsOfGonePeers): libp2p kept it for its whole TTL, so an agent that moved to
// another home relay still counted against the relay's caps for an hour.
import { afterEach, describe, expect, it } from 'vitest'
import { multiaddr } from '@multiformats/multiaddr'
import type { AgentNode } from '../../agent/tunnel/node.ts'
import { eventually } from '../lab/wait.ts'
import { testAgentNode, testRelayHost, type RelayHost } from './relay-host-fixture.ts'

const stops: Array<() => Promise<void>> = []
afterEach(async () => { for (const stop of stops.splice(0).reverse()) await stop().catch(() => {}) })
const relay = async (): Promise<RelayHost> => await testRelayHost(stops)
const agent = async (): Promise<AgentNode> => await testAgentNode(stops)

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
