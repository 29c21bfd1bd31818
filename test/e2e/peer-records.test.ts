// The peer records at rest, against a real kube-apiserver with the chart's RBAC and peer-record
// ValidatingAdmissionPolicy applied, agents (the real Catalog and LeasePublisher) acting with
// pod-bound node tokens, and a real kube-controller-manager running only the garbage collector:
// records appear, owned by their Node; they change when an agent's addresses or home relay do
// and are NOT rewritten while nothing changes (no write, no watch event: counted, not timed); a
// deleted record is recreated; the policy refuses another node's record and an owner that is not
// the agent's own Node; a deleted Node's record is garbage-collected, and comes back, owned by
// the new Node, when a Node of that name returns.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Catalog } from '../../agent/catalog/catalog.ts'
import { KubeClient, type WatchEvent } from '../../agent/catalog/kube-client.ts'
import { toPeer } from '../../agent/catalog/model.ts'
import { LeasePublisher } from '../../agent/catalog/peer-registry.ts'
import { Metrics } from '../../shared/metrics.ts'
import { CONTROL_PLANE_BIN, startControlPlane, type ControlPlane } from '../controlplane/harness.ts'
import { PEER_RECORD_POLICY, agentToken, apiRequest, ensureNode, installMeshRbac, type ApiResponse } from '../controlplane/cluster.ts'
import { startProcess, type LabProcess } from '../lab/proc.ts'
import { eventually } from '../lab/wait.ts'

const NS = 'edgemesh'
const LEASES = `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases`
const PEER_A = '12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA'
const PEER_B = '12D3KooWPgHATvH9wN3n43y2TgqGQabmPTxmEDX3rUHkRqLbuZAT'
const RELAY = '12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK'
const ADDR_A = '/ip4/10.0.0.11/tcp/4004'
const ADDR_B = '/ip4/10.0.0.12/tcp/4004'
/** what the records carry; the old design renewed every leaseDurationSeconds/4 = 2.5 s */
const LEASE_SECONDS = 10
const POLICY_DENIED = `ValidatingAdmissionPolicy '${PEER_RECORD_POLICY}' with binding '${PEER_RECORD_POLICY}' denied request: `
const log = pino({ level: 'silent' })

interface Agent { node: string, client: KubeClient, metrics: Metrics, catalog: Catalog, publisher: LeasePublisher, token: string }

let cp: ControlPlane
let dir: string
let kcm: LabProcess | undefined
const agents: Agent[] = []

async function admin (method: string, path: string, body?: unknown, contentType?: string): Promise<ApiResponse> {
  return await apiRequest(cp, cp.adminToken, method, path, body, contentType)
}

async function startAgent (node: string, peerId: string, addresses: string[], token?: string): Promise<Agent> {
  const t = token ?? await agentToken(cp, { nodeName: node })
  const client = new KubeClient({ server: cp.url, ca: cp.caPem, token: t })
  const metrics = new Metrics({ processMetrics: false })
  const catalog = new Catalog({ client, namespace: NS, syncTimeoutMs: 30_000, log, metrics })
  await catalog.start()
  expect(catalog.synced).toBe(true)
  const publisher = new LeasePublisher({ client, namespace: NS, nodeName: node, peerId, addresses, leaseDurationSeconds: LEASE_SECONDS, log, metrics, catalog, maxBackoffMs: 1000 })
  publisher.start()
  const agent = { node, client, metrics, catalog, publisher, token: t }
  agents.push(agent)
  return agent
}

async function stopAgent (a: Agent): Promise<void> {
  a.publisher.stop()
  await a.catalog.stop()
  a.client.close()
  agents.splice(agents.indexOf(a), 1)
}

/** edgemesh_peer_record_writes_total by verb */
async function writes (a: Agent): Promise<{ GET: number, POST: number, PUT: number }> {
  const out = { GET: 0, POST: 0, PUT: 0 }
  for (const v of (await a.metrics.peerRecordWrites.get()).values) out[v.labels.verb as keyof typeof out] = v.value
  return out
}

/** edgemesh_catalog_watch_events_total for the peer records, by type */
async function peerEvents (a: Agent): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  for (const v of (await a.metrics.catalogWatchEvents.get()).values) if (v.labels.resource === 'peers') out[String(v.labels.type)] = v.value
  return out
}
/** edgemesh_catalog_watch_bytes_total for the peer records */
async function peerBytes (a: Agent): Promise<number> {
  return (await a.metrics.catalogWatchBytes.get()).values.find((v) => v.labels.resource === 'peers')?.value ?? 0
}
const changes = (e: Record<string, number>): number => (e.ADDED ?? 0) + (e.MODIFIED ?? 0) + (e.DELETED ?? 0)

const lease = async (node: string): Promise<ApiResponse> => await admin('GET', `${LEASES}/${node}`)
const nodeUid = async (node: string): Promise<string> => {
  const res = await admin('GET', `/api/v1/nodes/${node}`)
  expect(res.status, res.text).toBe(200)
  return res.body.metadata.uid
}

beforeAll(async () => {
  cp = await startControlPlane()
  dir = await mkdtemp(join(tmpdir(), 'edgemesh-peer-records-'))
  await installMeshRbac(cp)
  // the garbage collector alone (what deletes kubelet's node leases with their Nodes too)
  const kubeconfig = join(dir, 'kcm.kubeconfig')
  await cp.writeKubeconfig(kubeconfig)
  kcm = startProcess([join(CONTROL_PLANE_BIN, 'kube-controller-manager'), `--kubeconfig=${kubeconfig}`, '--leader-elect=false', '--secure-port=0',
    '--controllers=garbagecollector', '--v=1'], { logFile: join(dir, 'kube-controller-manager.log') })
  await startAgent('node-a', PEER_A, [ADDR_A])
  await startAgent('node-b', PEER_B, [ADDR_B])
  await Promise.all(agents.map(async (a) => { await a.publisher.published }))
}, 120_000)

afterAll(async () => {
  for (const a of [...agents]) await stopAgent(a)
  await kcm?.kill('SIGTERM', 3000)
  await cp?.stop()
  if (dir != null) await rm(dir, { recursive: true, force: true })
})

describe('peer records on the real apiserver', () => {
  it('records appear: each agent writes its own Lease, owned by its Node; every catalog sees every record', async () => {
    for (const [node, peerId, addr] of [['node-a', PEER_A, ADDR_A], ['node-b', PEER_B, ADDR_B]] as const) {
      const res = await lease(node)
      expect(res.status, res.text).toBe(200)
      expect(res.body.spec.holderIdentity).toBe(peerId)
      expect(res.body.metadata.labels['edgemesh.io/peer-record']).toBe('true')
      expect(res.body.metadata.annotations['edgemesh.io/addresses']).toBe(JSON.stringify([addr]))
      expect(res.body.metadata.annotations['edgemesh.io/home-relay']).toBeUndefined()
      expect(res.body.metadata.ownerReferences).toEqual([{ apiVersion: 'v1', kind: 'Node', name: node, uid: await nodeUid(node) }])
    }
    for (const a of agents) {
      await eventually(async () => {
        const peers = a.catalog.snapshot().peers
        expect([...peers.values()].map((p) => [p.nodeName, p.peerId, p.addresses]).sort()).toEqual([['node-a', PEER_A, [ADDR_A]], ['node-b', PEER_B, [ADDR_B]]])
      }, 10_000, 50)
    }
  })

  it('at rest nothing is written and no watch sees a peer event; content changes are one write each', async () => {
    const [a, b] = agents as [Agent, Agent]
    const rvBefore = await Promise.all(['node-a', 'node-b'].map(async (n) => (await lease(n)).body.metadata.resourceVersion))
    const writesBefore = await Promise.all(agents.map(writes))
    const eventsBefore = await Promise.all(agents.map(peerEvents))
    const bytesBefore = await Promise.all(agents.map(peerBytes))
    let rawBytes = 0
    // a raw watch of every peer record from now on, like any agent's
    const list = await admin('GET', `${LEASES}?labelSelector=edgemesh.io%2Fpeer-record%3Dtrue`)
    const seen: WatchEvent[] = []
    const watcher = new KubeClient({ server: cp.url, ca: cp.caPem, token: cp.adminToken })
    const stopWatch = new AbortController()
    const watching = watcher.watch(LEASES, { resourceVersion: list.body.metadata.resourceVersion, timeoutSeconds: 300, labelSelector: 'edgemesh.io/peer-record=true', bookmarks: false, onBytes: (n) => { rawBytes += n } },
      (ev) => { seen.push(ev) }, stopWatch.signal).catch(() => {})

    // what used to cost a write each: the same content again, and a restarted agent (same key)
    a.publisher.update({ addresses: [ADDR_A] })
    a.publisher.update({})
    b.publisher.update({ addresses: [ADDR_B], homeRelay: undefined })
    const restarted = new LeasePublisher({ client: a.client, namespace: NS, nodeName: 'node-a', peerId: PEER_A, addresses: [ADDR_A], leaseDurationSeconds: LEASE_SECONDS, log, metrics: a.metrics })
    restarted.start()
    await restarted.published
    restarted.stop()
    // let more than four of the old design's renewal periods (2.5 s) pass, then a marker record
    // written by someone else: once every watch has it, each has delivered all that came before
    await new Promise((resolve) => setTimeout(resolve, 4 * LEASE_SECONDS * 250 + 1000))
    expect((await admin('POST', LEASES, { metadata: { name: 'marker', labels: { 'edgemesh.io/peer-record': 'true' } }, spec: { holderIdentity: PEER_A } })).status).toBe(201)
    await eventually(async () => {
      expect(seen.some((e) => e.object?.metadata?.name === 'marker')).toBe(true)
      for (const x of agents) expect(x.catalog.snapshot().peers.has('marker')).toBe(true)
    }, 10_000, 50)
    stopWatch.abort()
    await watching
    watcher.close()

    expect(seen.filter((e) => e.type !== 'BOOKMARK').map((e) => `${e.type} ${e.object?.metadata?.name}`)).toEqual(['ADDED marker'])
    const eventsAfter = await Promise.all(agents.map(peerEvents))
    for (const i of [0, 1]) expect(changes(eventsAfter[i]!) - changes(eventsBefore[i]!), agents[i]!.node).toBe(1) // the marker only
    // the bytes the agents' watches read: the marker's event, as the raw watch read it, plus at most a bookmark or two
    const bytesAfter = await Promise.all(agents.map(peerBytes))
    expect(rawBytes).toBeGreaterThan(100)
    for (const i of [0, 1]) {
      expect(bytesAfter[i]! - bytesBefore[i]!, agents[i]!.node).toBeGreaterThanOrEqual(rawBytes)
      expect(bytesAfter[i]! - bytesBefore[i]!, agents[i]!.node).toBeLessThan(rawBytes + 1000)
    }
    const rvAfter = await Promise.all(['node-a', 'node-b'].map(async (n) => (await lease(n)).body.metadata.resourceVersion))
    expect(rvAfter).toEqual(rvBefore)
    const writesAfter = await Promise.all(agents.map(writes))
    expect(writesAfter[0]!.POST + writesAfter[0]!.PUT).toBe(writesBefore[0]!.POST + writesBefore[0]!.PUT)
    expect(writesAfter[1]!.POST + writesAfter[1]!.PUT).toBe(writesBefore[1]!.POST + writesBefore[1]!.PUT)
    expect(writesAfter[0]!.GET - writesBefore[0]!.GET).toBe(2) // the restarted publisher: its Node and its record
    console.log(`[peer-records] at rest: 0 writes, 0 peer watch events over ${(4 * LEASE_SECONDS * 250 + 1000) / 1000} s (the old design: ~${2 * 4} writes, each an event to every agent)`)
    await admin('DELETE', `${LEASES}/marker`)

    // a home relay, then new addresses: one PUT each, seen by the other agent
    a.publisher.update({ homeRelay: RELAY })
    await eventually(async () => { expect(b.catalog.snapshot().peers.get('node-a')?.homeRelay).toBe(RELAY) }, 10_000, 50)
    a.publisher.update({ addresses: ['/ip4/10.0.0.21/tcp/4004'] })
    await eventually(async () => { expect(b.catalog.snapshot().peers.get('node-a')?.addresses).toEqual(['/ip4/10.0.0.21/tcp/4004']) }, 10_000, 50)
    const changed = await lease('node-a')
    expect(toPeer(changed.body)).toMatchObject({ peerId: PEER_A, homeRelay: RELAY, addresses: ['/ip4/10.0.0.21/tcp/4004'] })
    expect(changed.body.metadata.ownerReferences[0].uid).toBe(await nodeUid('node-a'))
    const w = await writes(a)
    expect(w.PUT - writesAfter[0]!.PUT).toBe(2)
    expect(w.POST).toBe(writesAfter[0]!.POST)
  }, 60_000)

  it('a deleted record is recreated with the same content', async () => {
    const a = agents[0]!
    const before = (await lease('node-a')).body
    expect((await admin('DELETE', `${LEASES}/node-a`)).status).toBe(200)
    await eventually(async () => {
      const res = await lease('node-a')
      expect(res.status).toBe(200)
      expect(res.body.metadata.uid).not.toBe(before.metadata.uid)
    }, 15_000, 100)
    const after = (await lease('node-a')).body
    expect(toPeer(after)).toMatchObject({ peerId: PEER_A, homeRelay: RELAY, addresses: ['/ip4/10.0.0.21/tcp/4004'] })
    expect(after.metadata.ownerReferences).toEqual(before.metadata.ownerReferences)
    expect((await writes(a)).POST).toBe(2)
  })

  it('the policy: an agent may not write another node\'s record, nor name any owner but its own Node', async () => {
    const a = agents[0]!
    const put = async (node: string, mutate: (o: any) => void): Promise<ApiResponse> => {
      const o = (await lease(node)).body
      mutate(o)
      return await apiRequest(cp, a.token, 'PUT', `${LEASES}/${node}`, o)
    }
    const denied = (res: ApiResponse, message: string): void => {
      expect(res.status, res.text).toBe(403)
      expect(res.body.reason).toBe('Forbidden')
      expect(res.body.message).toContain(POLICY_DENIED + message)
    }
    const notOwner = 'edgemesh-agent on node node-a may only name its own Node node-a as the owner of its peer record'
    denied(await put('node-b', (o) => { o.spec.holderIdentity = PEER_A }), 'edgemesh-agent on node node-a may only write the peer record named node-a, not node-b')
    const uidB = await nodeUid('node-b')
    denied(await put('node-a', (o) => { o.metadata.ownerReferences = [{ apiVersion: 'v1', kind: 'Node', name: 'node-b', uid: uidB }] }), notOwner)
    denied(await put('node-a', (o) => { o.metadata.ownerReferences.push({ apiVersion: 'v1', kind: 'Node', name: 'node-b', uid: uidB }) }), notOwner)
    denied(await put('node-a', (o) => { o.metadata.ownerReferences = [{ apiVersion: 'v1', kind: 'Pod', name: 'node-a', uid: uidB }] }), notOwner)
    const create = await apiRequest(cp, a.token, 'POST', LEASES, { metadata: { name: 'node-a', labels: { 'edgemesh.io/peer-record': 'true' }, ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: 'node-b', uid: uidB }] }, spec: { holderIdentity: PEER_A } })
    denied(create, notOwner) // admission runs before the storage's AlreadyExists
    // its own Node as the owner (what the publisher writes), or none (older agents): allowed
    const own = await put('node-a', (o) => { o.metadata.annotations['edgemesh.io/test'] = 'own-owner' })
    expect(own.status, own.text).toBe(200)
    expect((await lease('node-b')).body.spec.holderIdentity).toBe(PEER_B)
  })

  it('a deleted Node\'s record is garbage-collected and stays gone; a Node of that name again: recreated, owned by the new Node', async () => {
    const [a, b] = agents as [Agent, Agent]
    const oldUid = await nodeUid('node-b')
    const getsBefore = (await writes(b)).GET
    expect((await admin('DELETE', '/api/v1/nodes/node-b')).status).toBe(200)
    await eventually(async () => { expect((await lease('node-b')).status).toBe(404) }, 60_000, 200)
    await eventually(async () => { expect(a.catalog.snapshot().peers.has('node-b')).toBe(false) }, 10_000, 50)
    // agent B saw it go and checked (its pod-bound token stays valid: the apiserver only reads the
    // node claims of a pod-bound token): its Node is gone, so it wrote nothing back. Three GETs: a
    // publisher that recreated the record would stop after two (Node, record) and a POST, and
    // waiting for only two would look before that POST had landed
    await eventually(async () => { expect((await writes(b)).GET - getsBefore).toBeGreaterThanOrEqual(3) }, 15_000, 100)
    expect((await writes(b)).POST).toBe(1)
    const asB = await apiRequest(cp, b.token, 'GET', '/api/v1/nodes/node-b')
    expect(asB.status, asB.text).toBe(404) // B's token still works: it chose not to write
    expect((await lease('node-b')).status).toBe(404)
    console.log(`[peer-records] garbage collector deleted node-b's record; agent B re-checked ${(await writes(b)).GET - getsBefore} times and wrote nothing`)

    // the node re-registers (new uid); its agent, with a token for the new Node, publishes again
    await ensureNode(cp, 'node-b')
    const newUid = await nodeUid('node-b')
    expect(newUid).not.toBe(oldUid)
    // the live agent, still retrying, publishes again, owned by the new Node
    await eventually(async () => {
      const r = await lease('node-b')
      expect(r.status).toBe(200)
      expect(r.body.metadata.ownerReferences).toEqual([{ apiVersion: 'v1', kind: 'Node', name: 'node-b', uid: newUid }])
    }, 15_000, 100)
    expect((await writes(b)).POST).toBe(2)
    // and a restarted one finds it current
    await stopAgent(b)
    const b2 = await startAgent('node-b', PEER_B, [ADDR_B])
    await b2.publisher.published
    const res = await lease('node-b')
    expect(res.status, res.text).toBe(200)
    expect(res.body.metadata.ownerReferences).toEqual([{ apiVersion: 'v1', kind: 'Node', name: 'node-b', uid: newUid }])
    await eventually(async () => { expect(a.catalog.snapshot().peers.get('node-b')?.peerId).toBe(PEER_B) }, 10_000, 50)
  }, 120_000)
})
