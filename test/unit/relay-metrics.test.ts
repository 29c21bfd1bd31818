// Relay load gauges read at scrape time: reservations, open circuits (stop streams), blind relay bytes.
import { describe, expect, it } from 'vitest'
import { CIRCUIT_STOP_PROTOCOL, countCircuits, exportRelayLoad } from '../../server/relay-metrics.ts'
import { Metrics } from '../../shared/metrics.ts'

describe('relay load metrics', () => {
  it('counts one circuit per stop stream, ignoring hop, identify and half-open streams', () => {
    expect(countCircuits([CIRCUIT_STOP_PROTOCOL, '/libp2p/circuit/relay/0.2.0/hop', '/ipfs/id/1.0.0', undefined, CIRCUIT_STOP_PROTOCOL])).toBe(2)
    expect(countCircuits([])).toBe(0)
  })

  it('exports what the relay holds at each scrape', async () => {
    const metrics = new Metrics({ processMetrics: false })
    let bytes = 1000
    exportRelayLoad(metrics, { reservations: () => 3, streamProtocols: () => [CIRCUIT_STOP_PROTOCOL, '/libp2p/circuit/relay/0.2.0/hop'], blindRelayBytes: () => bytes })
    let text = await metrics.registry.metrics()
    expect(text).toContain('edgemesh_circuit_reservations 3')
    expect(text).toContain('edgemesh_circuit_relay_circuits 1')
    expect(text).toContain('edgemesh_blind_relay_bytes_total 1000')
    bytes = 5000
    text = await metrics.registry.metrics()
    expect(text).toContain('edgemesh_blind_relay_bytes_total 5000')
  })
})
