// libp2p merges a stream's protocol into the remote peer's record every time it opens or accepts
// a stream (connection.js: `peerStore.merge(remotePeer, { protocols: [protocol] })`), and an
// inbound stream's handler runs only after that merge: a datastore read, a mortice write lock
// with an abort listener, a protobuf decode/compare — measured ~0.3-0.5 ms per SOCKS5 connection
// on the target agent, straight on the connect path (the request rides with the proposal). The
// record only needs it once: the first merge per peer and protocol goes through unchanged, the
// repeats are answered with that merge's result. Only our own protocols, only that exact shape;
// everything else (identify, the registrar's own-protocol merges, addresses) is untouched.
import type { PeerId } from '@libp2p/interface'

/** The part of libp2p's PeerStore this touches. */
export interface MergingPeerStore {
  merge: (id: PeerId, data: any, options?: any) => Promise<any>
}

/**
 * Replaces `peerStore.merge` with one that skips repeated single-protocol merges of protocols
 * `ours` accepts for peers other than `self`. Returns a function that forgets a peer (its next
 * stream merges again), for when its record may have been dropped.
 */
export function skipRepeatedProtocolMerges (peerStore: MergingPeerStore, self: PeerId, ours: (protocol: string) => boolean): (peer: PeerId) => void {
  const merge = peerStore.merge.bind(peerStore)
  /** peer id -> protocol -> the peer as the first merge returned it */
  const merged = new Map<string, Map<string, unknown>>()
  peerStore.merge = async (id: PeerId, data: any, options?: any): Promise<any> => {
    const protocol = singleProtocol(data)
    if (protocol == null || !ours(protocol) || id.equals(self)) return await merge(id, data, options)
    const key = id.toString()
    const known = merged.get(key)
    if (known?.has(protocol) === true) return known.get(protocol)
    const peer = await merge(id, data, options)
    let m = merged.get(key)
    if (m == null) { m = new Map(); merged.set(key, m) }
    m.set(protocol, peer)
    return peer
  }
  return (peer) => { merged.delete(peer.toString()) }
}

/** The protocol of a `{ protocols: [p] }` merge (nothing else in it), else undefined. */
function singleProtocol (data: unknown): string | undefined {
  if (data == null || typeof data !== 'object') return undefined
  const keys = Object.keys(data)
  if (keys.length !== 1 || keys[0] !== 'protocols') return undefined
  const list = (data as { protocols: unknown }).protocols
  return Array.isArray(list) && list.length === 1 && typeof list[0] === 'string' ? list[0] : undefined
}
