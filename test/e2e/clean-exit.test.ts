// What `helm uninstall` leaves on a node: the kubelet deletes the DaemonSet's pod with SIGTERM,
// and the agent's clean exit must remove everything it put on the node. In the NAT lab, against
// the real apiserver: agents with the ClusterIP proxy (a1 on iptables-nft, b1 on iptables-legacy),
// node-local DNS and SOCKS5, with Services programmed (one with a remote endpoint: DNAT to the
// tunnel; one without endpoints: the filter table's REJECT chain). After SIGTERM, listed from the
// node's network namespace: no chain, rule or hook in either backend (iptables-save,
// iptables-legacy-save, nft list ruleset), no bridge device and no link-local address (ip -d link,
// ip addr). Also after a SIGKILL left everything behind (a crash, an OOM kill): the next agent's
// clean exit removes it all the same. The exit time is reported (the chart's
// terminationGracePeriodSeconds must cover it). The relay runs on the chart-style PEM key and the
// agents name it by its certificate. A rolling restart (SIGTERM, a new agent with the
// node's key) keeps the node's peer record (the Lease), so the other nodes keep the peer.
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab } from '../lab/lab.ts'
import { startK8sMesh, type K8sMesh } from '../lab/k8s-mesh.ts'
import { eventually } from '../lab/wait.ts'
import { metricValue } from '../lab/mesh.ts'
import { peerIdFromCertificateFile } from '../../shared/relay-certificate.ts'

const ROOT = join(import.meta.dirname, '../..')
const WORKLOAD = join(ROOT, 'test/lab/workload.mjs')
const FIXTURES = join(ROOT, 'test/fixtures/relay-identity')
const NODE = process.execPath
const NS = 'shop'
const LINK_LOCAL = '169.254.96.16'
const BACKEND: Record<string, 'nft' | 'legacy'> = { a1: 'nft', b1: 'legacy' }

let lab: Lab
let k: K8sMesh
let remoteIp: string
let emptyIp: string

/** Every line of the node's netfilter and link state that is the mesh's (chain prefix, comments, device, address). */
async function meshTraces (host: string): Promise<string[]> {
  const listings: Array<[string, string[]]> = [
    ['iptables-nft-save', ['iptables-nft-save']],
    ['iptables-legacy-save', ['iptables-legacy-save']],
    ['nft list ruleset', ['nft', 'list', 'ruleset']],
    ['ip -d link', ['ip', '-d', 'link', 'show']],
    ['ip addr', ['ip', 'addr', 'show']]
  ]
  const found: string[] = []
  for (const [name, argv] of listings) {
    const r = await lab.exec(host, argv)
    if (r.code !== 0) throw new Error(`${host}: ${name}: exit ${r.code} ${r.stderr}`)
    found.push(...r.stdout.split('\n').filter((l) => /edgemesh|EDGEMESH/i.test(l) || l.includes(LINK_LOCAL)).map((l) => `${name}: ${l.trim()}`))
  }
  return found
}

/** The ClusterIPs the node's rules mention, in the backend its agent uses. */
async function programmed (host: string): Promise<string> {
  const r = await lab.exec(host, [BACKEND[host] === 'nft' ? 'iptables-nft-save' : 'iptables-legacy-save'])
  return r.stdout
}

/** SIGTERM (what the kubelet sends) and the time until the agent has exited; its exit code must be 0. */
async function terminate (host: string): Promise<number> {
  const a = k.mesh.agent(host)
  const t0 = performance.now()
  await a.proc.kill('SIGTERM', 30_000)
  const ms = performance.now() - t0
  expect(await a.proc.exited, `${host} exit code`).toBe(0)
  return ms
}

beforeAll(async () => {
  lab = await createLab({ sites: [{ name: 'a', nat: 'cone' }, { name: 'b', nat: 'symmetric' }] })
  const web = await lab.addPod('b1')
  const server = lab.spawn(web, [NODE, WORKLOAD, 'http', 'b-web', '8080'])
  await server.waitForLine(/listening/, 10_000)
  // the relay runs on a PKCS#8 PEM key and the agents name it by its certificate, as the Helm
  // chart's generated identity has them (test/fixtures/relay-identity: made by the chart's functions)
  k = await startK8sMesh(lab, {
    agents: ['a1', 'b1'],
    relays: 1,
    relayConfig: { identityFile: join(FIXTURES, 'relay.key') },
    agentConfig: (host) => ({
      relays: [{ host: lab.relays[0]!.ip, certificateFile: join(FIXTURES, 'relay.crt') }],
      dns: {},
      proxy: { iptables: BACKEND[host], minSyncIntervalMs: 100, resyncSeconds: 5, destinationRules: false },
      socks5: { listen: [`${LINK_LOCAL}:10800`], allowedPorts: [22] }
    })
  })
  await k.admin('POST', '/api/v1/namespaces', { metadata: { name: NS } })
  const svc = async (name: string): Promise<string> => (await k.admin('POST', `/api/v1/namespaces/${NS}/services`, { metadata: { name, namespace: NS }, spec: { ports: [{ name: 'http', port: 80, targetPort: 8080 }] } })).spec.clusterIP
  remoteIp = await svc('web')
  emptyIp = await svc('empty')
  await k.admin('POST', `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, {
    metadata: { name: 'web-1', namespace: NS, labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: [{ addresses: [web.ip], conditions: { ready: true }, nodeName: 'edge-b1' }]
  })
}, 300_000)

afterAll(async () => {
  await k?.stop()
  await lab?.teardown()
})

describe('a clean exit (SIGTERM) leaves the node as it found it', () => {
  it('while running: the Services are programmed in each backend, the bridge holds the link-local address', async () => {
    for (const host of ['a1', 'b1']) {
      await eventually(async () => {
        const text = await programmed(host)
        if (!text.includes(`${remoteIp}/32`) || !text.includes(`${emptyIp}/32`)) throw new Error(`${host}: ${remoteIp} and ${emptyIp} not programmed yet`)
      }, 60_000, 200)
      const traces = await meshTraces(host)
      // the nat chains and hooks, the filter REJECT chain and hooks, the bridge and its address
      expect(traces.some((l) => l.includes(':EDGEMESH-REJECT')), traces.join('\n')).toBe(true)
      expect(traces.some((l) => /-A PREROUTING .*-j EDGEMESH-/.test(l)), traces.join('\n')).toBe(true)
      expect(traces.some((l) => l.startsWith('ip -d link: ') && l.includes('edgemesh0')), traces.join('\n')).toBe(true)
      expect(traces.some((l) => l.startsWith('ip addr: ') && l.includes(`inet ${LINK_LOCAL}/32`)), traces.join('\n')).toBe(true)
    }
  }, 120_000)

  it('the relay on the chart-style PEM key and agents naming it by its certificate: the relay\'s peer id is the certificate\'s', async () => {
    const relayId = k.mesh.relays[0]!.peerId // what the relay prints with --print-peer-id on the PEM key
    expect(relayId).toBe(peerIdFromCertificateFile(join(FIXTURES, 'relay.crt')))
    for (const host of ['a1', 'b1']) expect((await k.mesh.status(host)).relays.map((r: any) => r.peerId)).toEqual([relayId])
    await eventually(async () => { if ((await k.mesh.status('a1')).relays[0].udp !== 'up') throw new Error('not registered yet') }, 30_000, 200)
  }, 60_000)

  it('a rolling restart of a1 (SIGTERM, then a new agent with the node\'s key) keeps its peer record: the new agent finds it current and writes nothing; b1 keeps the peer and reaches it again', async () => {
    const lease = async (): Promise<any> => await k.admin('GET', '/apis/coordination.k8s.io/v1/namespaces/edgemesh/leases/edge-a1')
    const peerOnB1 = async (): Promise<{ peerId: string } | undefined> => (await k.mesh.call('b1', 'GET', '/catalog')).peers.find((p: any) => p.node === 'edge-a1')
    const recordRequests = async (verb: string): Promise<number> => metricValue(await k.mesh.agentMetrics('a1'), 'edgemesh_peer_record_writes_total', `verb="${verb}"`)
    await eventually(async () => { await k.mesh.ping('b1', 'a1') }, 60_000, 500)
    const before = await lease()
    const a = k.mesh.agent('a1')
    expect(before.spec.holderIdentity).toBe(a.peerId)
    await terminate('a1')
    // the old pod is gone, its record is not: b1 still holds the peer while the new pod starts
    const during = await lease()
    expect({ annotations: during.metadata.annotations, holder: during.spec.holderIdentity }).toEqual({ annotations: before.metadata.annotations, holder: before.spec.holderIdentity })
    expect(await peerOnB1()).toEqual(expect.objectContaining({ peerId: a.peerId }))
    await k.mesh.startAgent(a) // the DaemonSet's new pod: the same hostPath key
    // it reads its Node and its record, finds the record current and writes nothing (no event to any agent)
    await eventually(async () => { if (await recordRequests('GET') < 2) throw new Error('record not checked yet') }, 30_000, 200)
    expect([await recordRequests('POST'), await recordRequests('PUT')]).toEqual([0, 0])
    const after = await lease()
    expect(after.metadata.resourceVersion).toBe(during.metadata.resourceVersion)
    expect({ annotations: after.metadata.annotations, holder: after.spec.holderIdentity }).toEqual({ annotations: before.metadata.annotations, holder: before.spec.holderIdentity })
    expect(await peerOnB1()).toEqual(expect.objectContaining({ peerId: a.peerId }))
    const pong = await eventually(async () => await k.mesh.ping('b1', 'a1'), 60_000, 500)
    expect(pong.rttMs).toBeGreaterThan(0)
    // the checks above ran as soon as the second GET was sent, before a PUT it might lead to: once
    // b1 reached the new agent (its tunnel homed), still nothing written
    expect([await recordRequests('POST'), await recordRequests('PUT')]).toEqual([0, 0])
    expect((await lease()).metadata.resourceVersion).toBe(during.metadata.resourceVersion)
  }, 180_000)

  it('SIGTERM: exit 0; no chain, rule, hook, device or address of the mesh in either backend', async () => {
    for (const host of ['a1', 'b1']) {
      const ms = await terminate(host)
      console.log(`[clean-exit] ${host} (iptables-${BACKEND[host]!}): SIGTERM to exit ${ms.toFixed(0)} ms`)
      expect(await meshTraces(host)).toEqual([])
      expect(k.mesh.agent(host).proc.stdout()).toContain('proxy rules removed')
    }
  }, 120_000)

  it('after a SIGKILL left everything behind, the next agent\'s SIGTERM removes it all (device included)', async () => {
    const a = k.mesh.agent('a1')
    await k.mesh.startAgent(a)
    await eventually(async () => { if (!(await programmed('a1')).includes(`${remoteIp}/32`)) throw new Error('not programmed yet') }, 60_000, 200)
    await a.proc.kill('SIGKILL')
    const left = await meshTraces('a1')
    expect(left.some((l) => l.includes('edgemesh0')), left.join('\n')).toBe(true)
    expect(left.some((l) => l.includes('EDGEMESH-')), left.join('\n')).toBe(true)
    await k.mesh.startAgent(a) // finds the device and the chains of the killed one
    await eventually(async () => { if (!(await programmed('a1')).includes(`${remoteIp}/32`)) throw new Error('not programmed yet') }, 60_000, 200)
    const ms = await terminate('a1')
    console.log(`[clean-exit] a1 after a SIGKILL'd predecessor: SIGTERM to exit ${ms.toFixed(0)} ms`)
    expect(await meshTraces('a1')).toEqual([])
  }, 180_000)
})
