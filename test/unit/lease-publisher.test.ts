// The node's peer record across a rolling restart (agent/catalog/peer-registry.ts LeasePublisher):
// a clean stop leaves the Lease in place (no DELETE: every peer would forget the node during a
// roll, and the agents hold no delete right anyway); the new pod, with the node's persisted key,
// writes the same content over it; a record nobody renews any more stops counting as live after
// its duration (how the records of nodes that are gone are dropped, as before). An in-memory API.
import { describe, expect, it } from 'vitest'
import pino from 'pino'
import { LeasePublisher } from '../../agent/catalog/peer-registry.ts'
import { KubeApiError, type KubeClient } from '../../agent/catalog/kube-client.ts'
import { isPeerLive, toPeer } from '../../agent/catalog/model.ts'

const NS = 'edgemesh'
const PATH = `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases`
const PEER = '12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA'

/** Leases by name, with resourceVersions and conflict checks; every request logged. */
function fakeApi (): { client: KubeClient, leases: Map<string, any>, calls: string[] } {
  const leases = new Map<string, any>()
  const calls: string[] = []
  let rv = 0
  const client = {
    async request (method: string, path: string, body?: any) {
      calls.push(`${method} ${path}`)
      const name = path.startsWith(`${PATH}/`) ? path.slice(PATH.length + 1) : body?.metadata?.name
      const stored = leases.get(name)
      const save = (): any => { const o = structuredClone(body); o.metadata.resourceVersion = String(++rv); leases.set(name, o); return structuredClone(o) }
      switch (method) {
        case 'GET': if (stored == null) throw new KubeApiError(404, 'NotFound', 'not found'); return structuredClone(stored)
        case 'POST': if (stored != null) throw new KubeApiError(409, 'AlreadyExists', 'exists'); return save()
        case 'PUT':
          if (stored == null) throw new KubeApiError(404, 'NotFound', 'not found')
          if (body.metadata.resourceVersion !== stored.metadata.resourceVersion) throw new KubeApiError(409, 'Conflict', 'conflict')
          return save()
        default: throw new KubeApiError(405, 'MethodNotAllowed', method)
      }
    }
  } as unknown as KubeClient
  return { client, leases, calls }
}

const publisher = (client: KubeClient): LeasePublisher => new LeasePublisher({
  client, namespace: NS, nodeName: 'edge-1', peerId: PEER, addresses: ['/ip4/10.0.0.11/tcp/4004'], leaseDurationSeconds: 40, log: pino({ level: 'silent' })
})

describe('the peer record across a rolling restart', () => {
  it('a clean stop leaves the record; the next pod (same key) writes the same content over it; nothing is ever deleted', async () => {
    const api = fakeApi()
    const old = publisher(api.client)
    old.start()
    await old.published
    old.stop()
    const written = structuredClone(api.leases.get('edge-1'))
    expect(written.spec.holderIdentity).toBe(PEER)
    await new Promise((resolve) => setImmediate(resolve))
    expect(api.leases.get('edge-1')).toEqual(written) // still there after the stop

    const next = publisher(api.client)
    next.start()
    await next.published
    next.stop()
    const renewed = api.leases.get('edge-1')
    expect(renewed.metadata.annotations).toEqual(written.metadata.annotations)
    expect(renewed.metadata.labels).toEqual(written.metadata.labels)
    expect(renewed.spec.holderIdentity).toBe(PEER)
    expect(Number(renewed.metadata.resourceVersion)).toBeGreaterThan(Number(written.metadata.resourceVersion)) // replaced, not recreated
    expect(api.calls.filter((c) => c.startsWith('DELETE'))).toEqual([])
    expect(api.calls).toEqual([`GET ${PATH}/edge-1`, `POST ${PATH}`, `GET ${PATH}/edge-1`, `PUT ${PATH}/edge-1`])
  })

  it('a record nobody renews stops counting as live after its duration (a node that is gone)', () => {
    const renewTime = Date.parse('2026-12-03T21:00:00Z')
    const lease = { metadata: { name: 'edge-1', namespace: NS, resourceVersion: '1', annotations: {} }, spec: { holderIdentity: PEER, leaseDurationSeconds: 40, renewTime: '2026-12-03T21:00:00.000000Z' } }
    const peer = toPeer(lease)!
    expect(peer.renewTime).toBe(renewTime)
    expect(isPeerLive(peer, renewTime + 39_000)).toBe(true) // a rolling restart takes seconds
    expect(isPeerLive(peer, renewTime + 41_000)).toBe(false)
  })
})
