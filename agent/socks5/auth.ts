// SOCKS5 username/password (RFC 1929): read from files (a Secret volume, never the ConfigMap)
// and compared in constant time: both sides are hashed first, so neither the content nor the
// length of what a client sends changes how long the comparison takes.
import { createHash, timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { ConfigError } from '../../shared/config.ts'

export interface Credentials { username: Uint8Array, password: Uint8Array }

async function readSecret (file: string, field: string): Promise<Uint8Array> {
  let raw: Buffer
  try { raw = await readFile(file) } catch (err: any) { throw new ConfigError(`${field}: cannot read ${file}: ${err.message}`) }
  // one trailing newline is how files are written (echo, kubectl create secret --from-file)
  let end = raw.length
  if (end > 0 && raw[end - 1] === 0x0a) end--
  if (end > 0 && raw[end - 1] === 0x0d) end--
  const value = raw.subarray(0, end)
  if (value.length < 1 || value.length > 255) throw new ConfigError(`${field}: ${file} must hold 1-255 bytes (RFC 1929), it holds ${value.length}`)
  return new Uint8Array(value)
}

export async function loadCredentials (auth: { usernameFile: string, passwordFile: string }): Promise<Credentials> {
  return {
    username: await readSecret(auth.usernameFile, 'socks5.auth.usernameFile'),
    password: await readSecret(auth.passwordFile, 'socks5.auth.passwordFile')
  }
}

const digest = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest()

/** A check of what a client sent against `creds` that takes the same time whatever it sent. */
export function credentialVerifier (creds: Credentials): (username: Uint8Array, password: Uint8Array) => boolean {
  const u = digest(creds.username)
  const p = digest(creds.password)
  return (username, password) => {
    const userOk = timingSafeEqual(digest(username), u)
    const passOk = timingSafeEqual(digest(password), p)
    return userOk && passOk // both compared before either is looked at
  }
}
