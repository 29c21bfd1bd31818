// Registration authentication: an Ed25519 signature by the agent's libp2p key over the
// register body proves the peer id; an optional HMAC with the cluster PSK proves membership.
import { createHmac, timingSafeEqual } from 'node:crypto'

export const MAC_BYTES = 16

export function pskMac (psk: Uint8Array | undefined, body: Uint8Array): Uint8Array {
  if (psk == null) return new Uint8Array(0)
  return createHmac('sha256', psk).update(body).digest().subarray(0, MAC_BYTES)
}

export function macMatches (psk: Uint8Array | undefined, body: Uint8Array, mac: Uint8Array): boolean {
  if (psk == null) return true
  const want = pskMac(psk, body)
  return mac.byteLength === want.byteLength && timingSafeEqual(mac, want)
}
