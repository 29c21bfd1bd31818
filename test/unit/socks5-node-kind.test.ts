// agent/socks5/socks5.ts nodeKindOf: what a SOCKS5 target name is. The node itself and peers are
// answered locally; only a name that is neither, nor a known Service, is asked of the API (a GET
// of the Node, agent/catalog/node-lookup.ts): a client using Services by name costs no request.
import { describe, expect, it } from 'vitest'
import { nodeKindOf } from '../../agent/socks5/socks5.ts'

describe('SOCKS5 node kind', () => {
  it('self and peers locally; a Node without an agent asked of the API; a known Service never asked', async () => {
    const asked: string[] = []
    const nodes = { exists: async (name: string) => { asked.push(name); return name === 'edge-bare' || name === 'web.shop' } }
    const kind = nodeKindOf({
      nodeName: 'edge-1',
      directory: { byName: (n: string) => n === 'edge-2' ? { nodeName: 'edge-2', peerId: 'p', addresses: [] } : undefined },
      nodes,
      isService: (n) => n === 'web.shop' || n === 'web.shop.svc.cluster.local'
    })
    expect(await kind('edge-1')).toBe('self')
    expect(await kind('edge-2')).toBe('peer')
    expect(await kind('edge-bare')).toBe('no-agent')
    expect(await kind('nowhere')).toBeUndefined()
    expect(await kind('web.shop')).toBeUndefined() // a Service (even if a Node of that name exists: the Service wins)
    expect(await kind('web.shop.svc.cluster.local')).toBeUndefined()
    expect(asked).toEqual(['edge-bare', 'nowhere'])
    // without the API (standalone): nothing is a Node without an agent
    const standalone = nodeKindOf({ nodeName: 'edge-1', directory: { byName: () => undefined }, isService: () => false })
    expect(await standalone('edge-bare')).toBeUndefined()
  })
})
