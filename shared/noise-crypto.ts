// Noise's ChaCha20-Poly1305 through node:crypto with the session key held as a KeyObject.
// The stock implementation passes the raw key bytes on every message, so node:crypto imports
// the key each time (and that path deoptimised repeatedly in profiles of bulk transfers).
// Small messages keep the stock path (its WebAssembly cipher is faster below ~1.2 KB).
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from 'node:crypto'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import type { ICryptoInterface } from '@chainsafe/libp2p-noise'
import { Uint8ArrayList } from 'uint8arraylist'

const SMALL = 1200
const keys = new WeakMap<Uint8Array, KeyObject>()

function keyObject (k: Uint8Array): KeyObject {
  let o = keys.get(k)
  if (o === undefined) {
    o = createSecretKey(k)
    keys.set(k, o)
  }
  return o
}

export const noiseCrypto: ICryptoInterface = {
  ...defaultCrypto,
  chaCha20Poly1305Encrypt (plaintext, nonce, ad, k) {
    if (plaintext.byteLength < SMALL) return defaultCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, k)
    const cipher = createCipheriv('chacha20-poly1305', keyObject(k), nonce, { authTagLength: 16 })
    cipher.setAAD(ad, { plaintextLength: plaintext.byteLength })
    if (plaintext instanceof Uint8Array) {
      const updated = cipher.update(plaintext)
      const final = cipher.final()
      const tag = cipher.getAuthTag()
      return Buffer.concat([updated, final, tag], updated.byteLength + final.byteLength + tag.byteLength)
    }
    const out = new Uint8ArrayList()
    for (const buf of plaintext) out.append(cipher.update(buf))
    const final = cipher.final()
    if (final.byteLength > 0) out.append(final)
    out.append(cipher.getAuthTag())
    return out as any // noise bundles its own uint8arraylist copy; the shapes are the same
  },
  chaCha20Poly1305Decrypt (ciphertext, nonce, ad, k, dst) {
    if (ciphertext.byteLength < SMALL) return defaultCrypto.chaCha20Poly1305Decrypt(ciphertext, nonce, ad, k, dst)
    const tag: Uint8Array = ciphertext.subarray(ciphertext.byteLength - 16)
    const decipher = createDecipheriv('chacha20-poly1305', keyObject(k), nonce, { authTagLength: 16 })
    const text = ciphertext instanceof Uint8Array ? ciphertext.subarray(0, ciphertext.byteLength - 16) : ciphertext.sublist(0, ciphertext.byteLength - 16)
    decipher.setAAD(ad, { plaintextLength: text.byteLength })
    decipher.setAuthTag(tag)
    if (text instanceof Uint8Array) {
      const output = decipher.update(text)
      const final = decipher.final()
      return final.byteLength > 0 ? Buffer.concat([output, final], output.byteLength + final.byteLength) : output
    }
    const out = new Uint8ArrayList()
    for (const buf of text) out.append(decipher.update(buf))
    const final = decipher.final()
    if (final.byteLength > 0) out.append(final)
    return out as any
  }
}
