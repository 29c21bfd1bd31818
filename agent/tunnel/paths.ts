// Path kinds a tunnel connection can take, best first. The tunnel opens new streams on the
// best open connection to a peer.
import type { Connection } from '@libp2p/interface'

export type PathKind = 'direct-tcp' | 'direct-udp' | 'relay-udp' | 'relay-tcp'

export const PATH_PREFERENCE: readonly PathKind[] = ['direct-tcp', 'direct-udp', 'relay-udp', 'relay-tcp']

export function pathRank (p: PathKind): number { return PATH_PREFERENCE.indexOf(p) }

export function isDirect (p: PathKind): boolean { return p === 'direct-tcp' || p === 'direct-udp' }

/**
 * Classifies libp2p's own connections (TCP, circuit). UDX connections are labelled by the
 * dgram transport when it creates them, since their multiaddrs look alike.
 */
export function classifyLibp2pConnection (conn: Connection): PathKind | undefined {
  const addr = conn.remoteAddr.toString()
  if (addr.includes('/p2p-circuit')) return 'relay-tcp'
  if (addr.includes('/tcp/')) return 'direct-tcp'
  return undefined
}
