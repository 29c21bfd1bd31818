import { peerIdFromMultihash, peerIdFromString } from '@libp2p/peer-id'
import * as Digest from 'multiformats/hashes/digest'
import type { PeerId } from '@libp2p/interface'

/** Parses peer id bytes from the wire; throws on garbage (callers count and drop). */
export function peerIdFromBytes (bytes: Uint8Array): PeerId {
  return peerIdFromMultihash(Digest.decode(bytes))
}

export function parsePeerId (s: string, field: string): PeerId {
  try { return peerIdFromString(s) } catch (err: any) { throw new Error(`${field}: not a valid peer id (${err.message})`) }
}
