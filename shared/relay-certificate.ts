// A relay named by its certificate instead of its peer id: the Helm chart generates the relay's
// Ed25519 key and a self-signed X.509 certificate of it at install, and agents derive the peer
// id from the certificate's public key. Only node:crypto and a base58 encoder: shared/config.ts
// uses this while loading agent.yaml, long before the agent loads libp2p (about 90 ms of
// @libp2p/crypto module loading kept off the start-up path; the unit tests check the result
// against @libp2p/crypto + @libp2p/peer-id and the server's --print-peer-id).
import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { base58btc } from 'multiformats/bases/base58'

/**
 * The libp2p peer id (12D3KooW...) of a raw 32-byte Ed25519 public key: the identity multihash
 * (code 0x00, length 36) of the protobuf PublicKey { Type: Ed25519 (1), Data: key }, in base58btc.
 */
export function ed25519PeerIdString (publicKey: Uint8Array): string {
  if (publicKey.length !== 32) throw new Error(`expected a 32-byte Ed25519 public key, got ${publicKey.length} bytes`)
  const multihash = new Uint8Array(38)
  multihash.set([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])
  multihash.set(publicKey, 6)
  return base58btc.baseEncode(multihash)
}

/** The raw Ed25519 public key of a PEM certificate; throws a message saying what is wrong. */
export function ed25519PublicKeyOfCertificate (pem: string): Uint8Array {
  let cert: X509Certificate
  try {
    cert = new X509Certificate(pem)
  } catch (err: any) {
    throw new Error(`not a PEM X.509 certificate (${String(err.message ?? err)})`)
  }
  const key = cert.publicKey
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`the certificate holds a ${key.asymmetricKeyType ?? 'unknown'} key, expected the relay's Ed25519 key`)
  return Buffer.from(key.export({ format: 'jwk' }).x!, 'base64url')
}

/** The relay's peer id from its certificate (PEM text). */
export function peerIdFromCertificatePem (pem: string): string {
  return ed25519PeerIdString(ed25519PublicKeyOfCertificate(pem))
}

/** The relay's peer id from a certificate file; the error says which file and what is wrong. */
export function peerIdFromCertificateFile (file: string): string {
  let pem: string
  try {
    pem = readFileSync(file, 'utf8')
  } catch (err: any) {
    throw new Error(`cannot read ${file}: ${String(err.message ?? err)}`)
  }
  try {
    return peerIdFromCertificatePem(pem)
  } catch (err: any) {
    throw new Error(`${file}: ${String(err.message ?? err)}`)
  }
}
