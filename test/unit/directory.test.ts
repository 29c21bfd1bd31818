// Unit tests for the static peer directory (agent/tunnel/directory.ts).
import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { ConfigError } from '../../shared/config.ts'
import { StaticPeerDirectory, type PeerRecord } from '../../agent/tunnel/directory.ts'

let dir: string
let ids: string[] = []
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'edgemesh-dir-'))
  ids = await Promise.all([0, 1, 2, 3].map(async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()))
})
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

const id = (i: number): string => ids[i]!
/** long enough for the schema (>= 40 chars) but not peer ids: bad multihash, non-base58 characters */
const BAD_PEER_IDS = ['Qm' + 'x'.repeat(44), '12D3KooW' + '0OIl'.repeat(10)]

function yamlOf (peers: Array<{ name: string, peerId: string, addresses?: string[] }>): string {
  return 'peers:\n' + peers.map((p) => `  - name: ${p.name}\n    peerId: ${p.peerId}\n` +
    (p.addresses != null ? `    addresses: [${p.addresses.map((a) => JSON.stringify(a)).join(', ')}]\n` : '')).join('')
}

function thrownBy (fn: () => unknown): Error {
  try { fn() } catch (err) { return err as Error }
  throw new Error('expected an error')
}

async function rejectionOf (p: Promise<unknown>): Promise<Error> {
  try { await p } catch (err) { return err as Error }
  throw new Error('expected a rejection')
}

describe('StaticPeerDirectory.parse', () => {
  it('parses names, peer ids and addresses (default [])', () => {
    const recs = StaticPeerDirectory.parse(yamlOf([
      { name: 'edge-1', peerId: id(0), addresses: ['/ip4/10.0.0.1/tcp/4004'] },
      { name: 'edge-2', peerId: id(1) }
    ]), 'peers.yaml')
    expect(recs).toEqual([
      { nodeName: 'edge-1', peerId: id(0), addresses: ['/ip4/10.0.0.1/tcp/4004'] },
      { nodeName: 'edge-2', peerId: id(1), addresses: [] }
    ])
  })

  it('an empty peer list is valid', () => {
    expect(StaticPeerDirectory.parse('peers: []\n', 'p.yaml')).toEqual([])
  })

  it('a bad peer id names the source and peers[i].peerId', () => {
    for (const bad of BAD_PEER_IDS) {
      const err = thrownBy(() => StaticPeerDirectory.parse(yamlOf([{ name: 'a', peerId: id(0) }, { name: 'b', peerId: bad }]), 'peers.yaml'))
      expect(err.message.startsWith('peers.yaml: peers[1].peerId: not a valid peer id ('), err.message).toBe(true)
    }
  })

  // BUG: parse() wraps YAML and schema errors in ConfigError, but an invalid peer id comes
  // from parsePeerId as a plain Error, so runMain reports it as "fatal: <stack>" (exit 1)
  // instead of a one-line configuration error (exit 2).
  it('a bad peer id is a ConfigError like the other parse errors', () => {
    const err = thrownBy(() => StaticPeerDirectory.parse(yamlOf([{ name: 'a', peerId: BAD_PEER_IDS[0]! }]), 'peers.yaml'))
    expect(err.message).toMatch(/^peers\.yaml: peers\[0\]\.peerId: not a valid peer id/)
    expect(err).toBeInstanceOf(ConfigError)
  })

  it('a too-short peer id fails the schema with the field path', () => {
    const err = thrownBy(() => StaticPeerDirectory.parse(yamlOf([{ name: 'a', peerId: id(0) }, { name: 'b', peerId: 'short' }]), 'peers.yaml'))
    expect(err).toBeInstanceOf(ConfigError)
    // one line per invalid field, each naming the file and the field
    expect(err.message).toBe('invalid configuration in peers.yaml: peers[1].peerId: Too small: expected string to have >=40 characters')
  })

  it('schema errors: missing name, unknown keys, wrong shapes', () => {
    const e1 = thrownBy(() => StaticPeerDirectory.parse(`peers:\n  - peerId: ${id(0)}\n    nmae: a\n`, 'f'))
    expect(e1).toBeInstanceOf(ConfigError)
    expect(e1.message.split('\n')).toEqual([
      'invalid configuration in f: peers[0].name: Invalid input: expected string, received undefined',
      'invalid configuration in f: peers[0]: Unrecognized key: "nmae"'
    ])
    const e2 = thrownBy(() => StaticPeerDirectory.parse('peer: []\n', 'f'))
    expect(e2).toBeInstanceOf(ConfigError)
    expect(e2.message.split('\n')).toEqual([
      'invalid configuration in f: peers: Invalid input: expected array, received undefined',
      'invalid configuration in f: (root): Unrecognized key: "peer"'
    ])
    const e3 = thrownBy(() => StaticPeerDirectory.parse('', 'f'))
    expect(e3).toBeInstanceOf(ConfigError)
    expect(e3.message).toMatch(/^invalid configuration in f: \(root\): Invalid input: expected object[^\n]*$/)
  })

  it('invalid YAML is a ConfigError naming the source', () => {
    const err = thrownBy(() => StaticPeerDirectory.parse('peers: [\n', 'my-peers.yaml'))
    expect(err).toBeInstanceOf(ConfigError)
    expect(err.message.startsWith('my-peers.yaml is not valid YAML: ')).toBe(true)
    expect(err.message).toMatch(/^[^\n]+ at line \d+, column \d+$/) // one line: where, without the code frame
  })
})

describe('lookups', () => {
  it('byName, byPeerId and list', () => {
    const recs: PeerRecord[] = [
      { nodeName: 'edge-1', peerId: id(0), addresses: [] },
      { nodeName: 'edge-2', peerId: id(1), addresses: ['/ip4/1.2.3.4/tcp/4004'] }
    ]
    const d = new StaticPeerDirectory(recs)
    expect(d.byName('edge-2')).toEqual(recs[1])
    expect(d.byPeerId(id(0))).toEqual(recs[0])
    expect(d.byName('edge-3')).toBeUndefined()
    expect(d.byPeerId(id(2))).toBeUndefined()
    expect(d.byName(id(0))).toBeUndefined()
    expect(d.list()).toEqual(recs)
  })

  it('an empty directory, and reload without a file is a no-op', async () => {
    const d = new StaticPeerDirectory()
    expect(d.list()).toEqual([])
    expect(await d.reload()).toBe(false)
  })
})

describe('fromFile and reload', () => {
  it('loads the file, ignores an unchanged file and picks up a changed one', async () => {
    const file = join(dir, 'peers-a.yaml')
    await writeFile(file, yamlOf([{ name: 'edge-1', peerId: id(0) }]))
    const t0 = new Date('2024-01-01T00:00:00Z')
    await utimes(file, t0, t0)
    const d = await StaticPeerDirectory.fromFile(file)
    expect(d.list()).toEqual([{ nodeName: 'edge-1', peerId: id(0), addresses: [] }])
    expect(await d.reload()).toBe(false)

    await writeFile(file, yamlOf([{ name: 'edge-1', peerId: id(0) }, { name: 'edge-2', peerId: id(1), addresses: ['/ip4/10.1.1.1/tcp/1'] }]))
    const t1 = new Date('2024-01-01T00:00:10Z')
    await utimes(file, t1, t1)
    expect(await d.reload()).toBe(true)
    expect(d.list().map((r) => r.nodeName)).toEqual(['edge-1', 'edge-2'])
    expect(d.byPeerId(id(1))).toEqual({ nodeName: 'edge-2', peerId: id(1), addresses: ['/ip4/10.1.1.1/tcp/1'] })
    expect(await d.reload()).toBe(false)

    // removing a peer removes it from both indexes
    await writeFile(file, yamlOf([{ name: 'edge-2', peerId: id(1) }]))
    const t2 = new Date('2024-01-01T00:00:20Z')
    await utimes(file, t2, t2)
    expect(await d.reload()).toBe(true)
    expect(d.byName('edge-1')).toBeUndefined()
    expect(d.byPeerId(id(0))).toBeUndefined()
    expect(d.list()).toEqual([{ nodeName: 'edge-2', peerId: id(1), addresses: [] }])
  })

  it('a broken file on reload throws and keeps the last good records; fixing it recovers', async () => {
    const file = join(dir, 'peers-b.yaml')
    await writeFile(file, yamlOf([{ name: 'edge-1', peerId: id(0) }]))
    await utimes(file, new Date(1_000_000), new Date(1_000_000))
    const d = await StaticPeerDirectory.fromFile(file)
    const good = d.list()

    await writeFile(file, 'peers: [\n')
    await utimes(file, new Date(2_000_000), new Date(2_000_000))
    const err = await rejectionOf(d.reload())
    expect(err).toBeInstanceOf(ConfigError)
    expect(err.message.startsWith(`${file} is not valid YAML: `)).toBe(true)
    expect(d.list()).toEqual(good)
    expect(d.byName('edge-1')?.peerId).toBe(id(0))

    // still broken: every reload keeps failing (the mtime was not recorded as loaded)
    expect(await rejectionOf(d.reload())).toBeInstanceOf(ConfigError)

    // a bad peer id also keeps the last good records
    await writeFile(file, yamlOf([{ name: 'edge-9', peerId: BAD_PEER_IDS[0]! }]))
    await utimes(file, new Date(3_000_000), new Date(3_000_000))
    expect((await rejectionOf(d.reload())).message).toMatch(new RegExp(`^${file}: peers\\[0\\]\\.peerId: not a valid peer id`))
    expect(d.list()).toEqual(good)

    await writeFile(file, yamlOf([{ name: 'edge-3', peerId: id(3) }]))
    await utimes(file, new Date(4_000_000), new Date(4_000_000))
    expect(await d.reload()).toBe(true)
    expect(d.list()).toEqual([{ nodeName: 'edge-3', peerId: id(3), addresses: [] }])
  })

  it('fromFile with an invalid file rejects', async () => {
    const file = join(dir, 'peers-c.yaml')
    await writeFile(file, 'peers:\n  - name: a\n')
    const err = await rejectionOf(StaticPeerDirectory.fromFile(file))
    expect(err).toBeInstanceOf(ConfigError)
    expect(err.message).toBe(`invalid configuration in ${file}: peers[0].peerId: Invalid input: expected string, received undefined`)
  })

  it('fromFile with a missing file is a ConfigError naming peersFile and the cause', async () => {
    const missing = join(dir, 'nope.yaml')
    const err = await rejectionOf(StaticPeerDirectory.fromFile(missing))
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as Error).message).toMatch(new RegExp(`^peersFile: cannot read ${missing}: ENOENT`))
  })

  it('watch polls the file and stop ends polling', async () => {
    const file = join(dir, 'peers-d.yaml')
    await writeFile(file, yamlOf([{ name: 'edge-1', peerId: id(0) }]))
    await utimes(file, new Date(1_000_000), new Date(1_000_000))
    const d = await StaticPeerDirectory.fromFile(file)
    const errors: unknown[] = []
    d.watch(10, (e) => errors.push(e))
    try {
      await writeFile(file, yamlOf([{ name: 'edge-2', peerId: id(1) }]))
      await utimes(file, new Date(2_000_000), new Date(2_000_000))
      const deadline = Date.now() + 5_000
      while (d.byName('edge-2') == null && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
      expect(d.list()).toEqual([{ nodeName: 'edge-2', peerId: id(1), addresses: [] }])
      await writeFile(file, 'peers: 5\n')
      await utimes(file, new Date(3_000_000), new Date(3_000_000))
      while (errors.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
      expect(errors[0]).toBeInstanceOf(ConfigError)
      expect((errors[0] as Error).message).toBe(`invalid configuration in ${file}: peers: Invalid input: expected array, received number`)
      expect(d.byName('edge-2')?.peerId).toBe(id(1))
    } finally {
      d.stop()
    }
  })
})
