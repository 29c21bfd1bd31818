// Synchronous Ed25519 sign/verify on node:crypto KeyObjects made once from libp2p keys. The
// relay signs one datagram per agent keepalive; libp2p's async sign measured several times
// slower per call (test/bench/relay-sign.ts).
import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto'
import type { PeerId, PrivateKey } from '@libp2p/interface'

const b64url = (b: Uint8Array): string => Buffer.from(b).toString('base64url')

/** A signer for a libp2p Ed25519 private key (raw = 32-byte seed || 32-byte public key). */
export function ed25519Signer (key: PrivateKey): (data: Uint8Array) => Uint8Array {
  if (key.type !== 'Ed25519') throw new Error(`expected an Ed25519 key, got ${key.type}`)
  const k: KeyObject = createPrivateKey({
    format: 'jwk',
    key: { kty: 'OKP', crv: 'Ed25519', d: b64url(key.raw.subarray(0, 32)), x: b64url(key.publicKey.raw) }
  })
  return (data) => sign(null, data, k)
}

/** A verifier for the public key embedded in an Ed25519 peer id. */
export function ed25519Verifier (peerId: PeerId): (data: Uint8Array, signature: Uint8Array) => boolean {
  if (peerId.type !== 'Ed25519' || peerId.publicKey == null) throw new Error(`peer id ${peerId.toString()} does not embed an Ed25519 key`)
  const k: KeyObject = createPublicKey({ format: 'jwk', key: { kty: 'OKP', crv: 'Ed25519', x: b64url(peerId.publicKey.raw) } })
  return (data, signature) => {
    try { return verify(null, data, k, signature) } catch { return false }
  }
}
