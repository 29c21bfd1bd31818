// Relay load read at scrape time: circuit reservations held, relayed TCP circuits open and bytes
// the blind UDP relay forwarded. (Registered agents, blind relay pairs and refusals are counted
// where they change: server/rendezvous.ts, blind-relay.ts, limits.ts.)
import { Counter, Gauge } from 'prom-client'
import type { Metrics } from '../shared/metrics.ts'

/** The protocol of the stream a circuit relay opens to the destination: one per relayed circuit. */
export const CIRCUIT_STOP_PROTOCOL = '/libp2p/circuit/relay/0.2.0/stop'

export interface RelayLoadSource {
  /** circuit relay reservations held now */
  reservations: () => number
  /** protocols of the streams open on the relay host's connections */
  streamProtocols: () => Iterable<string | undefined>
  /** bytes the blind relay forwarded since start */
  blindRelayBytes: () => number
}

export function countCircuits (protocols: Iterable<string | undefined>): number {
  let n = 0
  for (const p of protocols) if (p === CIRCUIT_STOP_PROTOCOL) n++
  return n
}

export function exportRelayLoad (metrics: Metrics, source: RelayLoadSource): void {
  const registers = [metrics.registry]
  new Gauge({
    name: 'edgemesh_circuit_reservations',
    help: 'Circuit relay (TCP) reservations held by agents now',
    registers,
    collect () { this.set(source.reservations()) }
  })
  new Gauge({
    name: 'edgemesh_circuit_relay_circuits',
    help: 'Relayed TCP circuits open now (one stop stream to the destination agent each)',
    registers,
    collect () { this.set(countCircuits(source.streamProtocols())) }
  })
  new Counter({
    name: 'edgemesh_blind_relay_bytes_total',
    help: 'Bytes the blind UDP relay forwarded, both directions, UDX headers included',
    registers,
    collect () { this.reset(); this.inc(source.blindRelayBytes()) }
  })
}
