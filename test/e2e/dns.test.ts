// Node-local DNS in the NAT lab against the real apiserver: real `dig` from an edge host to the
// agent at 169.254.96.16 (on the agent's own bridge device) for every record kind of the
// Kubernetes DNS specification, propagation of a created and deleted Service, forwarding to a
// real upstream (dnsmasq on the "internet") with SERVFAIL while it is down, and garbage.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab, type LabProcess } from '../lab/lab.ts'
import { startK8sMesh, type K8sMesh } from '../lab/k8s-mesh.ts'
import { metricValue } from '../lab/mesh.ts'
import { eventually } from '../lab/wait.ts'

const DNS = '169.254.96.16'
const UPSTREAM = '198.51.100.10'
const NS = 'shop'
const ZONE = 'svc.cluster.local'

let lab: Lab
let k: K8sMesh
let upstream: LabProcess | undefined
let clusterIP = ''

interface Dig { status: string, flags: string[], answers: string[], raw: string }

async function dig (args: string[]): Promise<Dig> {
  const r = await lab.exec('a1', ['dig', `@${DNS}`, '+noall', '+comments', '+answer', '+tries=1', '+time=3', ...args], { timeoutMs: 15_000 })
  const status = /status: (\w+)/.exec(r.stdout)?.[1] ?? `no answer (dig exit ${r.code}): ${r.stdout}${r.stderr}`
  const flags = /;; flags: ([a-z ]+);/.exec(r.stdout)?.[1]?.trim().split(' ') ?? []
  const answers = r.stdout.split('\n').filter((l) => l !== '' && !l.startsWith(';')).map((l) => l.split(/\s+/).filter((_, i) => i !== 1).join(' '))
  return { status, flags, answers, raw: r.stdout }
}
const short = async (name: string, type = 'A', extra: string[] = []): Promise<string[]> => (await dig([name, type, ...extra])).answers.map((a) => a.split(' ').slice(3).join(' ')).sort()

function startUpstream (): LabProcess {
  // a real resolver for the names outside the cluster
  return lab.spawn('relay0', ['dnsmasq', '--no-daemon', '--no-resolv', '--no-hosts', '--bind-interfaces', `--listen-address=${UPSTREAM}`, '--port=53',
    '--address=/example.org/203.0.113.7', '--local-ttl=60', '--log-facility=-'])
}

const svc = (name: string, spec: Record<string, unknown>): unknown => ({ metadata: { name, namespace: NS }, spec })
const slice = (name: string, service: string, endpoints: Array<{ ip: string, ready?: boolean, hostname?: string }>, port = 8080, portName = 'http'): unknown => ({
  apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
  metadata: { name, namespace: NS, labels: { 'kubernetes.io/service-name': service } },
  addressType: 'IPv4',
  ports: [{ name: portName, port, protocol: 'TCP' }],
  endpoints: endpoints.map((e) => ({ addresses: [e.ip], conditions: { ready: e.ready ?? true }, ...(e.hostname != null ? { hostname: e.hostname } : {}) }))
})

beforeAll(async () => {
  lab = await createLab({ sites: [{ name: 'a', nat: 'cone' }, { name: 'b', nat: 'cone' }] })
  upstream = startUpstream()
  await upstream.waitForLine(/started, version/, 10_000)
  k = await startK8sMesh(lab, { agents: ['a1', 'b1'], agentConfig: () => ({ dns: { upstreams: [`${UPSTREAM}:53`], upstreamTimeoutMs: 500 } }) })
  const post = async (path: string, body: unknown): Promise<any> => await k.admin('POST', path, body)
  await post('/api/v1/namespaces', { metadata: { name: NS } })
  const web = await post(`/api/v1/namespaces/${NS}/services`, svc('web', { ports: [{ name: 'http', port: 80, targetPort: 8080 }] }))
  clusterIP = web.spec.clusterIP
  await post(`/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, slice('web-1', 'web', [{ ip: '10.1.0.10' }]))
  await post(`/api/v1/namespaces/${NS}/services`, svc('plain', { ports: [{ port: 9090 }] }))
  await post(`/api/v1/namespaces/${NS}/services`, svc('db', { clusterIP: 'None', ports: [{ name: 'pg', port: 5432 }] }))
  await post(`/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, slice('db-1', 'db', [{ ip: '10.1.0.20', hostname: 'db-0' }, { ip: '10.1.0.21', hostname: 'db-1' }, { ip: '10.1.0.22', ready: false, hostname: 'db-2' }], 5432, 'pg'))
  await post(`/api/v1/namespaces/${NS}/services`, svc('empty', { clusterIP: 'None', ports: [{ port: 80 }] }))
  await post(`/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, slice('empty-1', 'empty', [{ ip: '10.1.0.30', ready: false }]))
  await post(`/api/v1/namespaces/${NS}/services`, svc('ext', { type: 'ExternalName', externalName: 'www.example.org' }))
  await post(`/api/v1/namespaces/${NS}/services`, svc('many', { clusterIP: 'None', ports: [{ port: 80 }] }))
  await post(`/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, slice('many-1', 'many', Array.from({ length: 100 }, (_, i) => ({ ip: `10.2.${Math.floor(i / 200)}.${(i % 200) + 1}` }))))
  await eventually(async () => { expect(await short(`web.${NS}.${ZONE}`)).toEqual([clusterIP]) }, 20_000, 250)
}, 240_000)

afterAll(async () => {
  await k?.stop()
  await upstream?.kill()
  await lab?.teardown()
})

describe('node-local DNS (dig against the agent on 169.254.96.16)', () => {
  it('answers every record kind of the Kubernetes DNS specification', async () => {
    expect(await short(`web.${NS}.${ZONE}`)).toEqual([clusterIP])
    expect(await short(`_http._tcp.web.${NS}.${ZONE}`, 'SRV')).toEqual([`0 100 80 web.${NS}.${ZONE}.`])
    expect(await short(`plain.${NS}.${ZONE}`)).toHaveLength(1)
    expect(await short(`_9090._tcp.plain.${NS}.${ZONE}`, 'SRV')).toEqual([]) // unnamed ports have no SRV
    expect(await short(clusterIP.split('.').reverse().join('.') + '.in-addr.arpa', 'PTR')).toEqual([`web.${NS}.${ZONE}.`])
    // headless: one A per ready endpoint, per-endpoint hostnames, SRV per endpoint
    expect(await short(`db.${NS}.${ZONE}`)).toEqual(['10.1.0.20', '10.1.0.21'])
    expect(await short(`db-1.db.${NS}.${ZONE}`)).toEqual(['10.1.0.21'])
    // SRV per ready endpoint: port and target (priority and weight as the zone chooses them)
    expect((await short(`_pg._tcp.db.${NS}.${ZONE}`, 'SRV')).map((a) => a.split(' ').slice(2).join(' '))).toEqual([`5432 db-0.db.${NS}.${ZONE}.`, `5432 db-1.db.${NS}.${ZONE}.`])
    expect((await dig([`empty.${NS}.${ZONE}`])).status).toBe('NXDOMAIN') // headless with no ready endpoint
    // ExternalName: CNAME, followed upstream
    expect((await dig([`ext.${NS}.${ZONE}`])).answers).toEqual([`ext.${NS}.${ZONE}. IN CNAME www.example.org.`, 'www.example.org. IN A 203.0.113.7'])
    expect(await short(`10-1-2-3.${NS}.pod.cluster.local`)).toEqual(['10.1.2.3'])
    expect(await short('dns-version.cluster.local', 'TXT')).toEqual(['"1.1.0"'])
  })

  it('tells NXDOMAIN from NODATA so search paths behave', async () => {
    const nodata = await dig([`web.${NS}.${ZONE}`, 'AAAA'])
    expect([nodata.status, nodata.answers]).toEqual(['NOERROR', []])
    const ent = await dig([`${NS}.${ZONE}`]) // an empty non-terminal
    expect([ent.status, ent.answers]).toEqual(['NOERROR', []])
    expect((await dig([`nope.${NS}.${ZONE}`])).status).toBe('NXDOMAIN')
    expect((await dig([`web.${NS}.${ZONE}.${NS}.${ZONE}`])).status).toBe('NXDOMAIN')
    expect((await dig([`WeB.ShOp.SvC.cLuStEr.LoCaL`])).answers[0]).toMatch(/^WeB\.ShOp\.SvC\.cLuStEr\.LoCaL\. IN A /)
  })

  it('serves TCP, truncates with TC over UDP, and speaks EDNS0', async () => {
    const many = `many.${NS}.${ZONE}`
    const udp = await dig([many, '+ignore', '+noedns'])
    expect(udp.flags).toContain('tc')
    const tcp = await dig([many, '+tcp'])
    expect([tcp.status, tcp.answers.length, tcp.flags.includes('tc')]).toEqual(['NOERROR', 100, false])
    const edns = await lab.exec('a1', ['dig', `@${DNS}`, `web.${NS}.${ZONE}`, '+edns=0', '+bufsize=1232'])
    expect(edns.stdout).toMatch(/; EDNS: version: 0, flags:; udp: 1232/)
    expect((await dig([`web.${NS}.${ZONE}`, '+tcp'])).answers).toEqual([`web.${NS}.${ZONE}. IN A ${clusterIP}`])
  })

  it('a Service created through the API resolves, and NXDOMAIN once deleted, within a few seconds', async () => {
    const name = `late.${NS}.${ZONE}`
    const t0 = Date.now()
    const created = await k.admin('POST', `/api/v1/namespaces/${NS}/services`, svc('late', { ports: [{ port: 80 }] }))
    await eventually(async () => { expect(await short(name)).toEqual([created.spec.clusterIP]) }, 5_000, 50)
    const appearMs = Date.now() - t0
    const t1 = Date.now()
    await k.admin('DELETE', `/api/v1/namespaces/${NS}/services/late`)
    await eventually(async () => { expect((await dig([name])).status).toBe('NXDOMAIN') }, 5_000, 50)
    console.log(`[dns] created -> resolves in ${appearMs} ms; deleted -> NXDOMAIN in ${Date.now() - t1} ms (each including a dig round trip)`)
  })

  it('forwards other names; SERVFAIL quickly while the upstream is down, cluster names still answer; resumes when it returns', async () => {
    expect(await short('www.example.org')).toEqual(['203.0.113.7'])
    await upstream!.kill('SIGTERM')
    const t0 = Date.now()
    const down = await dig(['down-1.example.org'])
    const firstMs = Date.now() - t0
    expect(down.status).toBe('SERVFAIL')
    const t1 = Date.now()
    expect((await dig(['down-2.example.org'])).status).toBe('SERVFAIL')
    const nextMs = Date.now() - t1
    expect(firstMs).toBeLessThan(2_000) // one 500 ms attempt
    expect(nextMs).toBeLessThan(300) // the upstream is known down: no wait
    expect(await short(`web.${NS}.${ZONE}`)).toEqual([clusterIP])
    expect(await short('www.example.org')).toEqual(['203.0.113.7']) // cached
    upstream = startUpstream()
    await upstream.waitForLine(/started, version/, 10_000)
    await eventually(async () => { expect(await short('back.example.org')).toEqual(['203.0.113.7']) }, 15_000, 500)
    console.log(`[dns] upstream down: first SERVFAIL after ${firstMs} ms, then ${nextMs} ms`)
  })

  it('keeps the DNS bridge address (the same on every node) out of the tunnel: agents still punch direct paths', async () => {
    // 169.254.96.16 on each node once made agents dial themselves as a "LAN candidate"
    await eventually(async () => { expect((await k.mesh.ping('a1', 'b1')).path).toBe('direct-udp') }, 15_000, 500)
    const peer = (await k.mesh.status('a1')).peers.find((p: any) => p.node === 'edge-b1')
    expect(peer.remote).not.toMatch(/^169\.254\./)
  })

  it('drops and counts garbage, answers malformed questions with FORMERR, and keeps serving', async () => {
    const script = `
      const dgram = require('node:dgram'); const s = dgram.createSocket('udp4'); let n = 0
      const send = (b) => new Promise((r) => s.send(b, 53, '${DNS}', r))
      ;(async () => {
        for (let i = 0; i < 2000; i++) { const b = Buffer.alloc(1 + (i % 64)); for (let j = 0; j < b.length; j++) b[j] = (i * 31 + j * 7) & 0xff; await send(b); if (i % 50 === 49) await new Promise((r) => setTimeout(r, 5)) }
        await new Promise((r) => setTimeout(r, 200))
        const q = Buffer.from('abcd01000002000000000000', 'hex') // two questions: FORMERR
        s.on('message', (m) => { if (m[0] === 0xab && m[1] === 0xcd && (m[3] & 0x0f) === 1) n++ })
        for (let i = 0; i < 10; i++) await send(q)
        setTimeout(() => { console.log('formerr', n); s.close() }, 500)
      })()`
    const r = await lab.exec('a1', [process.execPath, '-e', script])
    expect(r.stdout).toMatch(/formerr 10/)
    const metrics = await k.mesh.agentMetrics('a1')
    expect(metricValue(metrics, 'edgemesh_dns_queries_total', 'result="dropped"') + metricValue(metrics, 'edgemesh_dns_queries_total', 'result="error"')).toBeGreaterThanOrEqual(2000)
    expect(await short(`web.${NS}.${ZONE}`)).toEqual([clusterIP])
  })
})
