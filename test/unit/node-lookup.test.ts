// agent/catalog/node-lookup.ts: whether a Node exists, asked on demand instead of watching every
// Node. Answers (negative too) are reused for the TTL, concurrent asks share one GET, the cache
// is bounded, API failures are not cached, and names that cannot be Node names cost no request.
import { describe, expect, it } from 'vitest'
import { couldBeNodeName, KubeNodeLookup } from '../../agent/catalog/node-lookup.ts'
import { KubeApiError } from '../../agent/catalog/kube-client.ts'

function fakeClient (nodes: Set<string>): { client: { request: (m: string, p: string) => Promise<any> }, gets: string[], down: { on: boolean } } {
  const gets: string[] = []
  const down = { on: false }
  const client = {
    async request (method: string, path: string) {
      gets.push(`${method} ${path}`)
      await new Promise((resolve) => setImmediate(resolve))
      if (down.on) throw new KubeApiError(0, 'Unreachable', 'connection refused')
      const name = decodeURIComponent(path.slice('/api/v1/nodes/'.length))
      if (!nodes.has(name)) throw new KubeApiError(404, 'NotFound', `nodes "${name}" not found`)
      return { metadata: { name } }
    }
  }
  return { client, gets, down }
}

describe('KubeNodeLookup', () => {
  it('answers from the API, then from the cache until the TTL passes; negative answers too', async () => {
    let now = 1_000
    const api = fakeClient(new Set(['edge-bare']))
    const lookup = new KubeNodeLookup({ client: api.client as any, ttlMs: 10_000, now: () => now })
    expect(await lookup.exists('edge-bare')).toBe(true)
    expect(await lookup.exists('nope')).toBe(false)
    expect(await lookup.exists('edge-bare')).toBe(true)
    expect(await lookup.exists('nope')).toBe(false)
    expect(api.gets).toEqual(['GET /api/v1/nodes/edge-bare', 'GET /api/v1/nodes/nope'])
    now += 10_001
    expect(await lookup.exists('nope')).toBe(false)
    expect(api.gets).toHaveLength(3)
  })

  it('concurrent asks for one name share one GET', async () => {
    const api = fakeClient(new Set(['n1']))
    const lookup = new KubeNodeLookup({ client: api.client as any })
    expect(await Promise.all([lookup.exists('n1'), lookup.exists('n1'), lookup.exists('n1')])).toEqual([true, true, true])
    expect(api.gets).toEqual(['GET /api/v1/nodes/n1'])
  })

  it('holds at most maxEntries names, dropping the oldest', async () => {
    const api = fakeClient(new Set())
    const lookup = new KubeNodeLookup({ client: api.client as any, maxEntries: 3 })
    for (const n of ['a', 'b', 'c', 'd']) await lookup.exists(n)
    expect(api.gets).toHaveLength(4)
    await lookup.exists('d') // cached
    await lookup.exists('b') // cached
    expect(api.gets).toHaveLength(4)
    await lookup.exists('a') // evicted: asked again
    expect(api.gets).toHaveLength(5)
  })

  it('an API failure throws and is not cached; a name that cannot be a Node costs no request', async () => {
    const api = fakeClient(new Set(['n1']))
    const lookup = new KubeNodeLookup({ client: api.client as any })
    api.down.on = true
    await expect(lookup.exists('n1')).rejects.toThrow(/connection refused/)
    api.down.on = false
    expect(await lookup.exists('n1')).toBe(true)
    expect(api.gets).toHaveLength(2)
    for (const bad of ['', 'UPPER', 'a/b', '../x', 'x'.repeat(254), '-lead', 'web.shop.svc.']) expect(await lookup.exists(bad), bad).toBe(false)
    expect(api.gets).toHaveLength(2)
    expect(couldBeNodeName('edge-7.site-a.example')).toBe(true)
  })
})
