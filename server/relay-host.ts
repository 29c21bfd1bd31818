// The relay's libp2p host: TCP listener with circuit relay v2 (limits off, so relayed
// tunnels are not cut after 2 minutes / 128 KiB), for agents whose site blocks UDP.
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { noiseCrypto } from '../shared/noise-crypto.ts'
import { identify } from '@libp2p/identify'
import { preSharedKey } from '@libp2p/pnet'
import { circuitRelayServer } from '@libp2p/circuit-relay-v2'
import type { PrivateKey } from '@libp2p/interface'

export async function startRelayHost (opts: { privateKey: PrivateKey, host: string, tcpPort: number, announce: string[], psk?: Uint8Array }): Promise<Libp2p> {
  return await createLibp2p({
    privateKey: opts.privateKey,
    addresses: {
      listen: [`/ip4/${opts.host}/tcp/${opts.tcpPort}`],
      // without announce, reservations would hand agents 127.0.0.1/LAN circuit addresses
      announce: opts.announce.map((a) => `/ip4/${a}/tcp/${opts.tcpPort}`)
    },
    transports: [tcp()],
    connectionEncrypters: [noise({ crypto: noiseCrypto })],
    streamMuxers: [yamux()],
    ...(opts.psk != null ? { connectionProtector: preSharedKey({ psk: opts.psk }) } : {}),
    connectionManager: { maxConnections: 20_000 },
    connectionGater: { denyDialMultiaddr: () => false },
    services: {
      identify: identify(),
      relay: circuitRelayServer({
        reservations: { applyDefaultLimit: false, maxReservations: 10_000 },
        maxInboundHopStreams: 4096,
        maxOutboundStopStreams: 4096
      })
    }
  })
}
