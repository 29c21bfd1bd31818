// agent/catalog/node-lookup.ts: whether a Node exists, asked on demand instead of watching every
// Node. Answers (negative too) are reused for the TTL, concurrent asks share one GET, the cache
// is bounded, API failures are not cached, and names that cannot be Node names cost no request.
import fc from 'fast-check'
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

  it('at most maxInFlight GETs at once: a further new name is not asked (throws), a name in flight shares its GET', async () => {
    const api = fakeClient(new Set(['n1']))
    const lookup = new KubeNodeLookup({ client: api.client as any, maxInFlight: 2 })
    const first = [lookup.exists('n1'), lookup.exists('n2')]
    await expect(lookup.exists('n3')).rejects.toThrow(/already in flight/)
    const shared = lookup.exists('n1')
    expect(await Promise.all([...first, shared])).toEqual([true, false, true])
    expect(api.gets).toEqual(['GET /api/v1/nodes/n1', 'GET /api/v1/nodes/n2'])
    expect(await lookup.exists('n3')).toBe(false) // asked once the others answered
  })

  it('fuzz: any name from a SOCKS5 request costs at most one GET of one /api/v1/nodes/<name> path, only for a possible Node name', async () => {
    await fc.assert(fc.asyncProperty(fc.oneof(fc.string({ maxLength: 300 }), fc.domain(), fc.stringMatching(/^[a-z0-9.-]{1,20}$/)), async (name) => {
      const api = fakeClient(new Set())
      const lookup = new KubeNodeLookup({ client: api.client as any })
      expect(await lookup.exists(name)).toBe(false)
      if (!couldBeNodeName(name)) { expect(api.gets).toEqual([]); return }
      expect(name.length).toBeLessThanOrEqual(253)
      expect(api.gets).toEqual([`GET /api/v1/nodes/${name}`]) // nothing to escape: no '/', '?', '%', '..' alone
      expect(name).not.toMatch(/^\.|\.\.|[^a-z0-9.-]/)
    }), { numRuns: 500 })
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
