// One source IP cannot hold more than maxConnectionsPerIp TCP connections open on the relay's
// libp2p host (server/relay-host.ts openConnectionsPerIp): without a PSK noise completes for
// anyone, and one address at the join rate filled all of maxConnections (20,000 by default).
// A real relay host without a PSK on 127.0.0.1; the dialers bind 127.0.0.1 and 127.0.0.2.
import { afterEach, describe, expect, it } from 'vitest'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp, type TCPSocketOptions } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { ipOf } from '../../server/relay-host.ts'
import { meshYamux } from '../../shared/yamux.ts'
import { Metrics } from '../../shared/metrics.ts'
import { eventually } from '../lab/wait.ts'
import { refusals as refusalsOf, testRelayHost } from './relay-host-fixture.ts'

const stops: Array<() => Promise<void>> = []
afterEach(async () => { for (const stop of stops.splice(0).reverse()) await stop().catch(() => {}) })

const PER_IP = 3

async function dialer (localAddress: string): Promise<Libp2p> {
  const node = await createLibp2p({
    // passed on to net.connect, whose localAddress TCPSocketOptions does not declare
    transports: [tcp({ dialOpts: { localAddress } as TCPSocketOptions })],
    connectionEncrypters: [noise()],
    streamMuxers: [meshYamux()],
    connectionMonitor: { enabled: false }
  })
  stops.push(async () => { await node.stop() })
  return node
}

describe('relay: open TCP connections per source IP', () => {
  it('one IP is refused past its cap (counted by reason) while another IP still connects; a closed one frees room', async () => {
    const metrics = new Metrics({ processMetrics: false })
    const host = await testRelayHost(stops, { metrics, maxConnectionsPerIp: PER_IP })
    const target = host.getMultiaddrs().find((a) => a.toString().includes('/tcp/'))!
    const refusals = async (reason: string): Promise<number> => await refusalsOf(metrics, reason)
    const openFrom = (ip: string): number => host.getConnections().filter((c) => ipOf(c.remoteAddr) === ip).length

    const hostile = await dialer('127.0.0.1')
    const outcomes: boolean[] = []
    for (let i = 0; i < PER_IP + 2; i++) {
      outcomes.push(await hostile.dial(target, { force: true, signal: AbortSignal.timeout(10_000) }).then(() => true, () => false))
    }
    expect(outcomes).toEqual([true, true, true, false, false])
    await eventually(async () => { expect(openFrom('127.0.0.1')).toBe(PER_IP) }, 10_000, 20)
    expect(await refusals('circuit-connections-per-ip')).toBe(2)

    const other = await dialer('127.0.0.2')
    const conn = await other.dial(target, { signal: AbortSignal.timeout(10_000) })
    expect(conn.status).toBe('open')
    await eventually(async () => { expect(openFrom('127.0.0.2')).toBe(1) }, 10_000, 20)

    // the hostile IP gets room back only as its own connections close
    await hostile.getConnections()[0]!.close()
    await eventually(async () => { expect(openFrom('127.0.0.1')).toBe(PER_IP - 1) }, 10_000, 20)
    expect(await hostile.dial(target, { force: true, signal: AbortSignal.timeout(10_000) }).then(() => true, () => false)).toBe(true)
    expect(await hostile.dial(target, { force: true, signal: AbortSignal.timeout(10_000) }).then(() => true, () => false)).toBe(false)
    expect(await refusals('circuit-connections-per-ip')).toBe(3)
    expect(openFrom('127.0.0.1')).toBe(PER_IP)
  }, 60_000)
})
