// The agent's probe listener (agent/health/): /readyz is 503 with its reasons while the first
// LIST is pending and DNS is not listening yet, 200 once the catalog synced and the agent's own
// DNS server answers kubernetes.default.svc.cluster.local from it; an agent whose apiserver is
// down is live (/healthz 200: no restart at the edge) but not ready without a snapshot on disk,
// ready when it serves the snapshot a previous run left, and ready again once the API answers.
// The real agent in-process, a fake apiserver on loopback, DNS on a loopback port (no device).
// The relay: /readyz once its UDP and TCP listeners are bound.
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AgentConfig } from '../../shared/config.ts'
import { startAgent, type RunningAgent } from '../../agent/main.ts'
import { freePort } from '../lab/ports.ts'
import { eventually } from '../lab/wait.ts'
import { catalogLists, FakeKubeApi, kubernetesService } from '../lab/fake-kube-api.ts'

const PEER = '12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA'

const LISTS = catalogLists({
  services: [kubernetesService()],
  endpointSlices: [{
    metadata: { namespace: 'default', name: 'kubernetes', resourceVersion: '6', labels: { 'kubernetes.io/service-name': 'kubernetes' } },
    addressType: 'IPv4', ports: [{ name: 'https', port: 6443, protocol: 'TCP' }], endpoints: [{ addresses: ['127.0.0.1'], conditions: { ready: true } }]
  }]
})

let dir: string
let api: FakeKubeApi
const running: RunningAgent[] = []

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'edgemesh-health-'))
  api = new FakeKubeApi(LISTS)
  await api.start(join(dir, 'kubeconfig'))
})

afterAll(async () => {
  for (const a of running.splice(0)) await a.stop().catch(() => {})
  await api?.close()
  await rm(dir, { recursive: true, force: true })
})

interface Probe { status: number, body: any }

async function get (port: number, path: string): Promise<Probe | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(10_000) })
    return { status: res.status, body: await res.json() }
  } catch {
    return undefined // not listening yet
  }
}

async function agentConfig (name: string, opts: { syncTimeoutMs: number, snapshotFile: string }): Promise<{ config: AgentConfig, healthPort: number, dnsPort: number }> {
  const healthPort = await freePort('tcp')
  const dnsPort = await freePort('udp')
  const config = AgentConfig.parse({
    nodeName: `health-${name}`,
    identityFile: join(dir, `${name}.key`),
    controlSocket: join(dir, `${name}.sock`),
    health: `127.0.0.1:${healthPort}`,
    listen: { host: '127.0.0.1', udpPort: 0, tcpPort: 0 },
    relays: [{ host: '127.0.0.1', peerId: PEER, tcpPort: await freePort('tcp'), udpPort: await freePort('udp') }],
    kubernetes: { kubeconfig: join(dir, 'kubeconfig'), snapshotFile: opts.snapshotFile, syncTimeoutMs: opts.syncTimeoutMs },
    dns: { listen: `127.0.0.1:${dnsPort}`, device: '', upstreams: ['127.0.0.1:9'] },
    logLevel: 'error'
  })
  return { config, healthPort, dnsPort }
}

const NAME = 'kubernetes.default.svc.cluster.local'
const NOT_SYNCED = 'catalog: not synced from the Kubernetes API yet, and no snapshot on disk to serve'

describe('agent probes', () => {
  const snapshotFile = (): string => join(dir, 'catalog.json')

  it('not ready while the first LIST is pending and DNS is not listening; ready once synced and DNS answers from the catalog', async () => {
    api.setMode('hang')
    const { config, healthPort } = await agentConfig('first', { syncTimeoutMs: 600_000, snapshotFile: snapshotFile() })
    const starting = startAgent(config)
    starting.then((a) => running.push(a), () => {})
    // start-up is held in the catalog step (the LIST hangs): the listener already explains why
    const early = await eventually(async () => { const r = await get(healthPort, '/readyz'); expect(r).toBeDefined(); return r! }, 60_000)
    expect(early.status).toBe(503)
    expect(early.body).toEqual({
      ready: false,
      starting: 'catalog',
      reasons: ['starting: catalog', NOT_SYNCED, 'dns: not listening yet'],
      catalog: { synced: false, source: 'empty' },
      dns: { name: NAME, answer: 'not listening' }
    })
    expect(await get(healthPort, '/healthz')).toEqual({ status: 503, body: { live: false, reasons: ['starting: catalog'] } })

    api.setMode('up') // the held LISTs are answered
    const agent = await starting
    const ready = await eventually(async () => { const r = await get(healthPort, '/readyz'); expect(r?.status).toBe(200); return r! }, 60_000)
    expect(ready.body).toEqual({ ready: true, reasons: [], catalog: { synced: true, source: 'api' }, dns: { name: NAME, answer: 'NOERROR, 1 answer(s)' } })
    expect(await get(healthPort, '/healthz')).toEqual({ status: 200, body: { live: true, reasons: [] } })

    // the control socket is part of liveness: gone, /healthz says so
    await rm(config.controlSocket)
    const dead = await get(healthPort, '/healthz')
    expect(dead).toEqual({ status: 503, body: { live: false, reasons: [expect.stringMatching(/^control socket: (ENOENT|ECONNREFUSED)$/)] } })

    await agent.stop() // a synced catalog is written to the snapshot file on stop
    running.splice(running.indexOf(agent), 1)
    expect((await stat(snapshotFile())).size).toBeGreaterThan(0)
    expect(await get(healthPort, '/readyz')).toBeUndefined() // the listener went with the agent
  }, 120_000)

  it('apiserver down, no snapshot: live but not ready (DNS answers NXDOMAIN from an empty zone); ready once the API answers', async () => {
    api.setMode('down')
    const { config, healthPort } = await agentConfig('offline', { syncTimeoutMs: 100, snapshotFile: join(dir, 'none.json') })
    const agent = await startAgent(config)
    running.push(agent)
    const r = await get(healthPort, '/readyz')
    expect(r).toEqual({
      status: 503,
      body: {
        ready: false,
        reasons: [NOT_SYNCED, `dns: ${NAME}: NXDOMAIN (the catalog has not reached DNS yet)`],
        catalog: { synced: false, source: 'empty' },
        dns: { name: NAME, answer: 'NXDOMAIN, 0 answer(s)' }
      }
    })
    // liveness does not depend on the apiserver
    expect(await get(healthPort, '/healthz')).toEqual({ status: 200, body: { live: true, reasons: [] } })

    api.setMode('up') // the reflectors' retries list everything
    const ready = await eventually(async () => { const x = await get(healthPort, '/readyz'); expect(x?.status).toBe(200); return x! }, 90_000)
    expect(ready.body).toMatchObject({ ready: true, reasons: [], catalog: { synced: true, source: 'api' } })
  }, 120_000)

  it('apiserver down, snapshot on disk: ready from the snapshot (an edge node cut off from its apiserver keeps serving)', async () => {
    api.setMode('down')
    const { config, healthPort } = await agentConfig('from-disk', { syncTimeoutMs: 100, snapshotFile: snapshotFile() })
    const agent = await startAgent(config)
    running.push(agent)
    expect(await get(healthPort, '/readyz')).toEqual({
      status: 200,
      body: { ready: true, reasons: [], catalog: { synced: false, source: 'disk' }, dns: { name: NAME, answer: 'NOERROR, 1 answer(s)' } }
    })
  }, 120_000)
})

describe('relay probes', () => {
  it('/readyz is 200 with both listeners bound, /healthz 200', async () => {
    const { ServerConfig } = await import('../../shared/config.ts')
    const { startServer } = await import('../../server/main.ts')
    const httpPort = await freePort('tcp')
    const relay = await startServer(ServerConfig.parse({
      identityFile: join(dir, 'server.key'), announce: ['127.0.0.1'],
      listen: { host: '127.0.0.1', tcpPort: 0, udpPort: 0, http: `127.0.0.1:${httpPort}` }, logLevel: 'error'
    }))
    try {
      expect(await get(httpPort, '/readyz')).toEqual({ status: 200, body: { ready: true, reasons: [] } })
      expect(await get(httpPort, '/healthz')).toMatchObject({ status: 200, body: { status: 'ok', peerId: relay.peerId } })
    } finally {
      await relay.stop()
    }
    expect(await get(httpPort, '/readyz')).toBeUndefined()
  }, 60_000)
})
