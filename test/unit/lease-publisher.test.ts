// The node's peer record (agent/catalog/peer-registry.ts LeasePublisher), written only when its
// content changes: across a rolling restart a clean stop leaves the Lease in place (no DELETE:
// every peer would forget the node during a roll, and the agents hold no delete right anyway) and
// the new pod, with the node's persisted key, finds it current and writes nothing; a new address
// or home relay is one PUT; a record deleted or changed by someone else is restored; the record
// is owned by its Node (so the garbage collector deletes it with the Node). An in-memory API.
import { describe, expect, it } from 'vitest'
import pino from 'pino'
import { LeasePublisher, type LeasePublisherOptions } from '../../agent/catalog/peer-registry.ts'
import { KubeApiError, type KubeClient } from '../../agent/catalog/kube-client.ts'
import { toPeer, type PeerInfo } from '../../agent/catalog/model.ts'
import type { Catalog, CatalogListener } from '../../agent/catalog/catalog.ts'
import type { CatalogSnapshot } from '../../agent/catalog/store.ts'
import { Metrics } from '../../shared/metrics.ts'
import { eventually as waitFor } from '../lab/wait.ts'

const eventually = async (check: () => void): Promise<void> => { await waitFor(async () => { check() }, 10_000, 5) }

const NS = 'edgemesh'
const PATH = `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases`
const NODE = '/api/v1/nodes/edge-1'
const PEER = '12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA'
const ADDR = '/ip4/10.0.0.11/tcp/4004'

/** Leases by name, with resourceVersions and conflict checks, and the Node edge-1; every request logged. */
function fakeApi (): { client: KubeClient, leases: Map<string, any>, calls: string[], node: { uid: string | undefined }, failing: { on: boolean } } {
  const leases = new Map<string, any>()
  const calls: string[] = []
  const node = { uid: 'uid-1' as string | undefined }
  const failing = { on: false }
  let rv = 0
  const client = {
    async request (method: string, path: string, body?: any) {
      calls.push(`${method} ${path}`)
      if (failing.on) throw new KubeApiError(0, 'Unreachable', 'connection refused')
      if (path === NODE) {
        if (method !== 'GET') throw new KubeApiError(403, 'Forbidden', method)
        if (node.uid == null) throw new KubeApiError(404, 'NotFound', 'no node')
        return { metadata: { name: 'edge-1', uid: node.uid } }
      }
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
  return { client, leases, calls, node, failing }
}

/** The catalog as the publisher sees it: a snapshot of peers and change notifications. */
function fakeCatalog (): { catalog: Catalog, show: (peer: PeerInfo | undefined) => void } {
  const listeners = new Set<CatalogListener>()
  let version = 0
  const catalog = { subscribe: (fn: CatalogListener) => { listeners.add(fn); return () => { listeners.delete(fn) } } } as unknown as Catalog
  const show = (peer: PeerInfo | undefined): void => {
    const peers = new Map(peer != null ? [['edge-1', peer]] : [])
    const snap = { version: ++version, source: 'api', services: new Map(), endpoints: new Map(), peers } as unknown as CatalogSnapshot
    for (const fn of listeners) fn(snap, [{ kind: 'peer', type: peer != null ? 'upsert' : 'delete', key: 'edge-1' }])
  }
  return { catalog, show }
}

const publisher = (client: KubeClient, extra: Partial<LeasePublisherOptions> = {}): LeasePublisher => new LeasePublisher({
  client, namespace: NS, nodeName: 'edge-1', peerId: PEER, addresses: [ADDR], leaseDurationSeconds: 40, log: pino({ level: 'silent' }), ...extra
})

/** Lets the publisher's pending requests (all immediate in the fake) run to the end. */
const settle = async (): Promise<void> => { for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve)) }

describe('the peer record across a rolling restart', () => {
  it('a clean stop leaves the record; the next pod (same key) finds it current and writes nothing; nothing is ever deleted', async () => {
    const api = fakeApi()
    const old = publisher(api.client)
    old.start()
    await old.published
    old.stop()
    const written = structuredClone(api.leases.get('edge-1'))
    expect(written.spec.holderIdentity).toBe(PEER)
    expect(written.metadata.ownerReferences).toEqual([{ apiVersion: 'v1', kind: 'Node', name: 'edge-1', uid: 'uid-1' }])
    await settle()
    expect(api.leases.get('edge-1')).toEqual(written) // still there after the stop

    const next = publisher(api.client)
    next.start()
    await next.published
    next.stop()
    expect(api.leases.get('edge-1')).toEqual(written) // same content: not rewritten
    expect(api.calls.filter((c) => c.startsWith('DELETE'))).toEqual([])
    expect(api.calls).toEqual([`GET ${NODE}`, `GET ${PATH}/edge-1`, `POST ${PATH}`, `GET ${NODE}`, `GET ${PATH}/edge-1`])
  })

  it('a record an older agent wrote (renewed every 10 s, no owner) is taken over once: owner added, then left alone', async () => {
    const api = fakeApi()
    api.leases.set('edge-1', { metadata: { name: 'edge-1', namespace: NS, resourceVersion: '100', annotations: { 'edgemesh.io/peer-id': PEER, 'edgemesh.io/addresses': JSON.stringify([ADDR]) } }, spec: { holderIdentity: PEER, leaseDurationSeconds: 40, renewTime: '2026-12-03T21:00:00.000000Z' } })
    const p = publisher(api.client)
    p.start()
    await p.published
    p.stop()
    expect(api.calls).toEqual([`GET ${NODE}`, `GET ${PATH}/edge-1`, `PUT ${PATH}/edge-1`])
    expect(api.leases.get('edge-1').metadata.ownerReferences).toEqual([{ apiVersion: 'v1', kind: 'Node', name: 'edge-1', uid: 'uid-1' }])
    // standalone (no Node object): the same content is not rewritten just to drop the owner
    const api2 = fakeApi()
    api2.node.uid = undefined
    api2.leases.set('edge-1', structuredClone(api.leases.get('edge-1')))
    const q = publisher(api2.client)
    q.start()
    await q.published
    q.stop()
    expect(api2.calls).toEqual([`GET ${NODE}`, `GET ${PATH}/edge-1`])
  })
})

describe('written only when the content changes', () => {
  it('update(): a new address or home relay is one PUT; the same content again is no request at all', async () => {
    const api = fakeApi()
    const metrics = new Metrics()
    const p = publisher(api.client, { metrics })
    p.start()
    await p.published
    const afterStart = api.calls.length
    p.update({ addresses: [ADDR] })
    p.update({})
    p.update({ homeRelay: undefined })
    await settle()
    expect(api.calls.length).toBe(afterStart)

    p.update({ homeRelay: '12D3KooWrelayA' })
    await eventually(() => { if (toPeer(api.leases.get('edge-1'))?.homeRelay !== '12D3KooWrelayA') throw new Error('not yet') })
    p.update({ addresses: ['/ip4/10.0.0.12/tcp/4004'] })
    await eventually(() => { if (toPeer(api.leases.get('edge-1'))?.addresses[0] !== '/ip4/10.0.0.12/tcp/4004') throw new Error('not yet') })
    p.update({ homeRelay: '12D3KooWrelayA', addresses: ['/ip4/10.0.0.12/tcp/4004'] })
    await settle()
    p.stop()
    expect(api.calls.slice(afterStart)).toEqual([`PUT ${PATH}/edge-1`, `PUT ${PATH}/edge-1`])
    const rec = toPeer(api.leases.get('edge-1'))!
    expect(rec).toMatchObject({ peerId: PEER, addresses: ['/ip4/10.0.0.12/tcp/4004'], homeRelay: '12D3KooWrelayA' })
    expect(api.leases.get('edge-1').metadata.ownerReferences[0].uid).toBe('uid-1') // kept on the fast path
    const writes = await metrics.registry.getSingleMetricAsString('edgemesh_peer_record_writes_total')
    expect(writes).toContain('edgemesh_peer_record_writes_total{verb="GET"} 2')
    expect(writes).toContain('edgemesh_peer_record_writes_total{verb="POST"} 1')
    expect(writes).toContain('edgemesh_peer_record_writes_total{verb="PUT"} 2')
  })

  it('the catalog showing our own record (the echo of our write, or a relist) costs nothing', async () => {
    const api = fakeApi()
    const cat = fakeCatalog()
    const p = publisher(api.client, { catalog: cat.catalog })
    p.start()
    await p.published
    const n = api.calls.length
    for (let i = 0; i < 5; i++) cat.show(toPeer(api.leases.get('edge-1')))
    await settle()
    p.stop()
    expect(api.calls.length).toBe(n)
  })
})

describe('restored when someone else changes it', () => {
  it('a deleted record is recreated when the catalog shows it gone; a record rewritten with other content is put back', async () => {
    const api = fakeApi()
    const cat = fakeCatalog()
    const p = publisher(api.client, { catalog: cat.catalog })
    p.start()
    await p.published
    api.leases.delete('edge-1')
    cat.show(undefined)
    await eventually(() => { if (api.leases.get('edge-1') == null) throw new Error('not recreated') })
    expect(toPeer(api.leases.get('edge-1'))).toMatchObject({ peerId: PEER, addresses: [ADDR] })

    const tampered = api.leases.get('edge-1')
    tampered.metadata.annotations['edgemesh.io/addresses'] = '["/ip4/6.6.6.6/tcp/1"]'
    tampered.metadata.resourceVersion = '999'
    cat.show(toPeer(tampered))
    await eventually(() => { if (toPeer(api.leases.get('edge-1'))?.addresses[0] !== ADDR) throw new Error('not restored') })
    p.stop()
    expect(api.calls.filter((c) => c.startsWith('POST'))).toHaveLength(2)
  })

  it('a Node re-created under the same name (new uid): the recreated record names the new Node', async () => {
    const api = fakeApi()
    const cat = fakeCatalog()
    const p = publisher(api.client, { catalog: cat.catalog })
    p.start()
    await p.published
    api.node.uid = 'uid-2'
    api.leases.delete('edge-1') // what the garbage collector does when the old Node goes
    cat.show(undefined)
    await eventually(() => { if (api.leases.get('edge-1')?.metadata.ownerReferences?.[0]?.uid !== 'uid-2') throw new Error('old owner') })
    p.stop()
  })

  it('its Node deleted (the node is being removed): the record the garbage collector deleted is not recreated ownerless; the Node back (new uid): recreated, owned by it', async () => {
    const api = fakeApi()
    const cat = fakeCatalog()
    const p = publisher(api.client, { catalog: cat.catalog, maxBackoffMs: 20 })
    p.start()
    await p.published
    api.node.uid = undefined
    api.leases.delete('edge-1')
    cat.show(undefined)
    await eventually(() => { if (api.calls.filter((c) => c === `GET ${NODE}`).length < 4) throw new Error('not retried yet') })
    expect(api.leases.get('edge-1')).toBeUndefined()
    expect(api.calls.filter((c) => c.startsWith('POST'))).toHaveLength(1) // the first record only
    api.node.uid = 'uid-3'
    await eventually(() => { if (api.leases.get('edge-1')?.metadata.ownerReferences?.[0]?.uid !== 'uid-3') throw new Error('not recreated') })
    p.stop()
  })

  it('two writers of one record (another agent with this node name): restores back off instead of looping; alone again, it is restored', async () => {
    const api = fakeApi()
    const cats = [fakeCatalog(), fakeCatalog()]
    // the watch: every stored version of the record reaches both catalogs, a little later
    const client = {
      async request (method: string, path: string, body?: any) {
        const out = await api.client.request(method, path, body)
        if (method === 'PUT' || method === 'POST') { const seen = toPeer(out); setImmediate(() => { for (const c of cats) c.show(seen) }) }
        return out
      }
    } as unknown as KubeClient
    const mine = publisher(client, { catalog: cats[0]!.catalog, maxBackoffMs: 1000 })
    const other = publisher(client, { catalog: cats[1]!.catalog, maxBackoffMs: 1000, addresses: ['/ip4/10.9.9.9/tcp/4004'] })
    mine.start()
    await mine.published
    other.start()
    await new Promise((resolve) => setTimeout(resolve, 500))
    other.stop()
    // without the backoff the two rewrite each other for as long as both run: thousands of writes
    // in these 500 ms (each an event to every agent); with it, 3 restores each, then one a second
    const writes = api.calls.filter((c) => c.startsWith('PUT') || c.startsWith('POST')).length
    expect(writes).toBeGreaterThanOrEqual(4)
    expect(writes).toBeLessThan(20)
    await eventually(() => { if (toPeer(api.leases.get('edge-1'))?.addresses[0] !== ADDR) throw new Error('not restored') })
    mine.stop()
  })

  it('the echo of an earlier write of ours, seen after an update(), is not taken for a foreign change', async () => {
    const api = fakeApi()
    const cat = fakeCatalog()
    const p = publisher(api.client, { catalog: cat.catalog })
    p.start()
    await p.published
    const first = toPeer(api.leases.get('edge-1'))
    p.update({ homeRelay: '12D3KooWrelayA' })
    await eventually(() => { if (toPeer(api.leases.get('edge-1'))?.homeRelay !== '12D3KooWrelayA') throw new Error('not yet') })
    const n = api.calls.length
    cat.show(first) // the watch delivers our first write only now
    cat.show(toPeer(api.leases.get('edge-1')))
    await settle()
    p.stop()
    expect(api.calls.slice(n)).toEqual([])
  })

  it('failures are retried with backoff until the API answers', async () => {
    const api = fakeApi()
    api.failing.on = true
    const p = publisher(api.client, { maxBackoffMs: 20 })
    p.start()
    await eventually(() => { if (api.calls.length < 3) throw new Error('not retried yet') })
    api.failing.on = false
    await p.published
    p.stop()
    expect(toPeer(api.leases.get('edge-1'))).toMatchObject({ peerId: PEER, addresses: [ADDR] })
  })
})
