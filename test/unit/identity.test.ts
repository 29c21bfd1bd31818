// Unit tests for the persisted node identity (shared/identity.ts).
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { loadOrCreateIdentity } from '../../shared/identity.ts'

let dir: string
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'edgemesh-identity-')) })
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

async function rejectionOf (p: Promise<unknown>): Promise<Error> {
  try { await p } catch (err) { return err as Error }
  throw new Error('expected a rejection')
}

describe('loadOrCreateIdentity', () => {
  it('first call creates a 0600 key file (created=true); second call loads the same peer id (created=false)', async () => {
    const file = join(dir, 'a', 'nested', 'agent.key')
    const first = await loadOrCreateIdentity(file)
    expect(first.created).toBe(true)
    expect(first.privateKey.type).toBe('Ed25519')
    expect(first.peerId.toString()).toMatch(/^12D3KooW/)
    expect(first.peerId.equals(peerIdFromPrivateKey(first.privateKey))).toBe(true)

    const st = await stat(file)
    expect(st.isFile()).toBe(true)
    expect(st.mode & 0o777).toBe(0o600)
    // the file holds exactly this private key, and no temp file is left behind
    expect(peerIdFromPrivateKey(privateKeyFromProtobuf(await readFile(file))).toString()).toBe(first.peerId.toString())
    expect(await readdir(join(dir, 'a', 'nested'))).toEqual(['agent.key'])

    const second = await loadOrCreateIdentity(file)
    expect(second.created).toBe(false)
    expect(second.peerId.toString()).toBe(first.peerId.toString())
    expect(second.privateKey.equals(first.privateKey)).toBe(true)
    expect((await stat(file)).mtimeMs).toBe(st.mtimeMs)
  })

  it('keys are random: two files give two different peer ids', async () => {
    const a = await loadOrCreateIdentity(join(dir, 'x', 'node.key'))
    const b = await loadOrCreateIdentity(join(dir, 'y', 'node.key'))
    expect(a.created && b.created).toBe(true)
    expect(a.peerId.toString()).not.toBe(b.peerId.toString())
    // the same path in the second location is not derived from the name either
    await rm(join(dir, 'x', 'node.key'))
    const again = await loadOrCreateIdentity(join(dir, 'x', 'node.key'))
    expect(again.created).toBe(true)
    expect(again.peerId.toString()).not.toBe(a.peerId.toString())
  })

  it('a corrupt file is an error naming the file and "corrupt", and is left untouched', async () => {
    for (const [name, content] of [['garbage.key', Buffer.from('not a key at all')], ['empty.key', Buffer.alloc(0)], ['trunc.key', null]] as const) {
      const file = join(dir, name)
      let bytes: Buffer
      if (content == null) {
        // a valid key file cut in half
        const src = join(dir, 'src', 'full.key')
        await loadOrCreateIdentity(src)
        bytes = (await readFile(src)).subarray(0, 20)
      } else {
        bytes = content
      }
      await writeFile(file, bytes)
      const err = await rejectionOf(loadOrCreateIdentity(file))
      expect(err.message).toContain(file)
      expect(err.message).toMatch(new RegExp(`^identity key ${file} is corrupt \\(.+\\); move it away to generate a new identity$`))
      expect(Buffer.compare(await readFile(file), bytes)).toBe(0)
    }
  })

  it('an unreadable path (a directory) is an error naming the file', async () => {
    const err = await rejectionOf(loadOrCreateIdentity(dir))
    expect(err.message).toMatch(new RegExp(`^cannot read identity key ${dir}: EISDIR`))
  })
})
