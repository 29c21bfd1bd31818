// The binaries (bin/*.js, running dist/) with the relay identity the Helm chart generates: the
// relay's --print-peer-id on the PKCS#8 PEM key is the peer id an agent derives from the
// certificate (and libp2p derives from the key); a key or a certificate of the wrong kind is one
// line naming the field. The fixture pair was made by the chart's helm functions.
import { execFile } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { publicKeyFromRaw } from '@libp2p/crypto/keys'
import { peerIdFromPublicKey } from '@libp2p/peer-id'
import { peerIdFromCertificateFile } from '../../shared/relay-certificate.ts'

const ROOT = resolve(import.meta.dirname, '../..')
const SERVER_BIN = join(ROOT, 'bin/edgemesh-server.js')
const AGENT_BIN = join(ROOT, 'bin/edgemesh-agent.js')
const FIXTURES = join(ROOT, 'test/fixtures/relay-identity')

interface Run { code: number | null, stdout: string, stderr: string }
async function run (bin: string, args: string[]): Promise<Run> {
  return await new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err == null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr })
    })
  })
}

let dir: string
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'edgemesh-relay-identity-cli-')) })
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

describe('relay identity from the chart\'s PEM key and certificate', { timeout: 60_000 }, () => {
  it('edgemesh-server --print-peer-id on the PEM key prints the peer id agents derive from the certificate', async () => {
    const r = await run(SERVER_BIN, ['--set', `identityFile=${join(FIXTURES, 'relay.key')}`, '--print-peer-id'])
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' })
    const printed = r.stdout.trim()
    expect(printed).toBe(peerIdFromCertificateFile(join(FIXTURES, 'relay.crt')))
    // and libp2p's own derivation from the certificate's key agrees
    const { X509Certificate } = await import('node:crypto')
    const raw = Buffer.from(new X509Certificate(await readFile(join(FIXTURES, 'relay.crt'))).publicKey.export({ format: 'jwk' }).x!, 'base64url')
    expect(printed).toBe(peerIdFromPublicKey(publicKeyFromRaw(raw)).toString())
  })

  it('edgemesh-server on a PEM key that is not Ed25519: one line naming identityFile, exit 1, the file untouched', async () => {
    const file = join(dir, 'rsa.key')
    const pem = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }) as string
    await writeFile(file, pem)
    const r = await run(SERVER_BIN, ['--set', `identityFile=${file}`, '--print-peer-id'])
    expect(r.code).toBe(1)
    expect(r.stderr).toBe(`error: identityFile: identity key ${file} is not a usable PEM key (it holds a rsa key, not Ed25519): expected a PKCS#8 Ed25519 private key ("-----BEGIN PRIVATE KEY-----") or a libp2p key file\n`)
    expect(await readFile(file, 'utf8')).toBe(pem)
  })

  it('edgemesh-agent with a relay certificate of the wrong kind: one line naming relays[0].certificateFile, exit 2', async () => {
    const cfg = join(dir, 'agent.yaml')
    await writeFile(cfg, `nodeName: edge-1\nidentityFile: ${join(dir, 'agent.key')}\ncontrolSocket: ${join(dir, 'agent.sock')}\nrelays:\n  - { host: 203.0.113.10, certificateFile: ${join(FIXTURES, 'rsa.crt')} }\n`)
    const r = await run(AGENT_BIN, ['--config', cfg])
    expect(r.code).toBe(2)
    expect(r.stderr).toBe(`error: invalid configuration in ${cfg}: relays[0].certificateFile: ${join(FIXTURES, 'rsa.crt')}: the certificate holds a rsa key, expected the relay's Ed25519 key\n`)
  })
})
