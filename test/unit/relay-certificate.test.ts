// Unit tests for naming a relay by its certificate (shared/relay-certificate.ts) and for the relay
// loading the chart's PKCS#8 PEM key (shared/identity.ts): the peer id an agent derives from the
// certificate is the one the relay has with the key (libp2p's own derivation is the reference),
// and bad files are refused saying what is wrong. The fixture pair was made by the Helm chart's
// functions (test/fixtures/relay-identity/README.md).
import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { generateKeyPair, privateKeyToProtobuf, publicKeyFromRaw } from '@libp2p/crypto/keys'
import { peerIdFromPublicKey } from '@libp2p/peer-id'
import { ed25519PeerIdString, ed25519PublicKeyOfCertificate, peerIdFromCertificateFile, peerIdFromCertificatePem } from '../../shared/relay-certificate.ts'
import { loadOrCreateIdentity, privateKeyFromPkcs8Pem } from '../../shared/identity.ts'

const FIXTURES = new URL('../fixtures/relay-identity/', import.meta.url)
let dir: string
let keyPem: string
let certPem: string
let rsaPem: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'edgemesh-relay-cert-'))
  const read = async (f: string): Promise<string> => await readFile(new URL(f, FIXTURES), 'utf8')
  ;[keyPem, certPem, rsaPem] = await Promise.all([read('relay.key'), read('relay.crt'), read('rsa.crt')])
})
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

/** libp2p's peer id of a raw Ed25519 public key: what the relay's libp2p host presents. */
const libp2pPeerId = (raw: Uint8Array): string => peerIdFromPublicKey(publicKeyFromRaw(raw)).toString()

describe('ed25519PeerIdString', () => {
  it('equals libp2p\'s peer id for any 32-byte Ed25519 public key', async () => {
    for (let i = 0; i < 20; i++) {
      const key = await generateKeyPair('Ed25519')
      expect(ed25519PeerIdString(key.publicKey.raw)).toBe(libp2pPeerId(key.publicKey.raw))
    }
    fc.assert(fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (raw) => ed25519PeerIdString(raw) === libp2pPeerId(raw)), { numRuns: 200 })
  })

  it('refuses a key that is not 32 bytes', () => {
    expect(() => ed25519PeerIdString(new Uint8Array(31))).toThrow('expected a 32-byte Ed25519 public key, got 31 bytes')
  })
})

describe('the chart\'s key pair: the certificate names the relay the key is', () => {
  it('the certificate\'s public key is the key\'s, and its peer id is the one the relay loads from the PEM key', async () => {
    const privateKey = privateKeyFromPkcs8Pem(keyPem)
    expect(privateKey.type).toBe('Ed25519')
    expect(Buffer.from(ed25519PublicKeyOfCertificate(certPem))).toEqual(Buffer.from(privateKey.publicKey.raw))
    const peerId = peerIdFromCertificatePem(certPem)
    expect(peerId).toMatch(/^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$/)
    expect(peerId).toBe(libp2pPeerId(privateKey.publicKey.raw))
    const keyFile = join(dir, 'relay.key')
    await writeFile(keyFile, keyPem, { mode: 0o400 })
    const identity = await loadOrCreateIdentity(keyFile)
    expect(identity.created).toBe(false)
    expect(identity.peerId.toString()).toBe(peerId)
    expect(await readFile(keyFile, 'utf8')).toBe(keyPem) // read, never rewritten
  })

  it('a node:crypto Ed25519 key in PKCS#8 PEM loads with the same public key node:crypto gives', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519')
    const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }) as string
    const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url')
    const file = join(dir, 'node.key')
    await writeFile(file, `\n${pem}`) // leading whitespace is still PEM
    expect((await loadOrCreateIdentity(file)).peerId.toString()).toBe(libp2pPeerId(raw))
  })

  it('a libp2p key file still loads as before (the format is told by content)', async () => {
    const key = await generateKeyPair('Ed25519')
    const file = join(dir, 'libp2p.key')
    await writeFile(file, privateKeyToProtobuf(key))
    expect((await loadOrCreateIdentity(file)).peerId.toString()).toBe(libp2pPeerId(key.publicKey.raw))
  })
})

describe('bad files say what is wrong', () => {
  it('a certificate file that is missing, not a certificate, or not Ed25519', async () => {
    expect(() => peerIdFromCertificateFile(join(dir, 'absent.crt'))).toThrow(new RegExp(`^cannot read ${join(dir, 'absent.crt')}: ENOENT`))
    const keyAsCert = join(dir, 'key-as-cert.crt')
    await writeFile(keyAsCert, keyPem)
    expect(() => peerIdFromCertificateFile(keyAsCert)).toThrow(new RegExp(`^${keyAsCert}: not a PEM X.509 certificate \\(`))
    const rsa = join(dir, 'rsa.crt')
    await writeFile(rsa, rsaPem)
    expect(() => peerIdFromCertificateFile(rsa)).toThrow(`${rsa}: the certificate holds a rsa key, expected the relay's Ed25519 key`)
  })

  it('a PEM key that is not Ed25519, or not a key, names the file and the expected format; the file is left alone', async () => {
    const rsaKey = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }) as string
    for (const [name, content, problem] of [['rsa.key', rsaKey, 'it holds a rsa key, not Ed25519'], ['cert.key', certPem, '']] as const) {
      const file = join(dir, name)
      await writeFile(file, content)
      const err = await loadOrCreateIdentity(file).then(() => undefined, (e: Error) => e)
      expect(err?.message).toMatch(new RegExp(`^identity key ${file} is not a usable PEM key \\(.+\\): expected a PKCS#8 Ed25519 private key \\("-----BEGIN PRIVATE KEY-----"\\) or a libp2p key file$`))
      if (problem !== '') expect(err?.message).toContain(problem)
      expect(await readFile(file, 'utf8')).toBe(content)
    }
  })
})
