// Unit tests for agent/tunnel/peer-store-merges.ts: libp2p's per-stream protocol merges, once per peer and protocol of ours.
import { describe, expect, it } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { skipRepeatedProtocolMerges, type MergingPeerStore } from '../../agent/tunnel/peer-store-merges.ts'

const peer = async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519'))

function fakeStore (): MergingPeerStore & { calls: Array<{ id: string, data: any }> } {
  const calls: Array<{ id: string, data: any }> = []
  return { calls, merge: async (id, data) => { calls.push({ id: id.toString(), data }); return { id, n: calls.length } } }
}

describe('skipRepeatedProtocolMerges', () => {
  it('merges our protocol once per peer, answers repeats with the first result, and merges again after forget', async () => {
    const [self, a, b] = await Promise.all([peer(), peer(), peer()])
    const store = fakeStore()
    const forget = skipRepeatedProtocolMerges(store, self, (p) => p.startsWith('/edgemesh/'))
    const first = await store.merge(a, { protocols: ['/edgemesh/socks5-node/1.0.0'] })
    const again = await store.merge(a, { protocols: ['/edgemesh/socks5-node/1.0.0'] })
    expect(again).toBe(first)
    expect(store.calls).toHaveLength(1)
    await store.merge(a, { protocols: ['/edgemesh/proxy/1.0.0'] }) // another protocol
    await store.merge(b, { protocols: ['/edgemesh/socks5-node/1.0.0'] }) // another peer
    expect(store.calls.map((c) => [c.id, c.data.protocols[0]])).toEqual([
      [a.toString(), '/edgemesh/socks5-node/1.0.0'], [a.toString(), '/edgemesh/proxy/1.0.0'], [b.toString(), '/edgemesh/socks5-node/1.0.0']
    ])
    forget(a)
    await store.merge(a, { protocols: ['/edgemesh/socks5-node/1.0.0'] })
    expect(store.calls).toHaveLength(4)
  })

  it('passes through foreign protocols, other shapes and merges of this node itself, every time', async () => {
    const [self, a] = await Promise.all([peer(), peer()])
    const store = fakeStore()
    skipRepeatedProtocolMerges(store, self, (p) => p.startsWith('/edgemesh/'))
    for (let i = 0; i < 2; i++) {
      await store.merge(a, { protocols: ['/ipfs/id/1.0.0'] })
      await store.merge(a, { protocols: ['/edgemesh/proxy/1.0.0', '/edgemesh/ping/1.0.0'] })
      await store.merge(a, { protocols: ['/edgemesh/proxy/1.0.0'], metadata: { x: Uint8Array.of(1) } })
      await store.merge(self, { protocols: ['/edgemesh/proxy/1.0.0'] })
    }
    expect(store.calls).toHaveLength(8)
  })

  it('a failed first merge is not remembered: the next stream merges again', async () => {
    const [self, a] = await Promise.all([peer(), peer()])
    let fail = true
    const calls: string[] = []
    const store: MergingPeerStore = { merge: async (id) => { calls.push(id.toString()); if (fail) throw new Error('datastore down'); return { id } } }
    skipRepeatedProtocolMerges(store, self, () => true)
    await expect(store.merge(a, { protocols: ['/edgemesh/ping/1.0.0'] })).rejects.toThrow('datastore down')
    fail = false
    await store.merge(a, { protocols: ['/edgemesh/ping/1.0.0'] })
    await store.merge(a, { protocols: ['/edgemesh/ping/1.0.0'] })
    expect(calls).toHaveLength(2)
  })
})
