// The chart's `helm test` pods (templates/tests/), rendered by the real helm and their check
// script (files/helm-test.js, `node -e` in the pod) run for real on this machine against a real
// relay and a real agent in-process (catalog from a fake apiserver, DNS on a loopback port):
// what the pod's environment names is what gets checked, PASS lines and exit 0; and the same
// script against a DNS port where nothing listens fails with the reason, exit 1.
import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseAllDocuments } from 'yaml'
import { AgentConfig, ServerConfig } from '../../shared/config.ts'
import { startAgent, type RunningAgent } from '../../agent/main.ts'
import { startServer, type RunningServer } from '../../server/main.ts'
import { HELM_BIN } from '../controlplane/harness.ts'
import { catalogLists, FakeKubeApi, kubernetesService } from '../lab/fake-kube-api.ts'
import { freePort } from '../lab/ports.ts'
import { eventually } from '../lab/wait.ts'

const run = promisify(execFile)
const CHART = resolve(import.meta.dirname, '../../manifests/helm/edgemesh')
const RELEASE = 'r1'
const NS = 'edgemesh'
const SERVER_SVC = `${RELEASE}-edgemesh-server`

let dir: string
let api: FakeKubeApi
let relay: RunningServer
let agent: RunningAgent
let httpPort: number
let dnsPort: number

interface TestPod { name: string, script: string, env: Record<string, string>, hostPaths: Record<string, string>, spec: any, annotations: Record<string, string> }

async function renderTests (...set: string[]): Promise<TestPod[]> {
  const { stdout } = await run(HELM_BIN, ['template', RELEASE, CHART, '-n', NS, '--kube-version', '1.36.0',
    '--set', 'relay.announce[0]=127.0.0.1', ...set.flatMap((s) => ['--set', s])])
  // the whole chart (--show-only refuses a template that renders nothing): its test hooks
  return parseAllDocuments(stdout).map((d) => d.toJS()).filter((o) => o?.kind === 'Pod' && o.metadata?.annotations?.['helm.sh/hook'] === 'test').map((pod) => {
    const c = pod.spec.containers[0]
    expect(c.command).toEqual(['node'])
    expect(c.args[0]).toBe('-e')
    const env: Record<string, string> = {}
    for (const e of c.env) if (e.value != null) env[e.name] = e.value
    // what the kubelet does: the hostPath volumes' paths, by mount path
    const hostPaths: Record<string, string> = {}
    for (const m of c.volumeMounts ?? []) hostPaths[m.mountPath] = pod.spec.volumes.find((v: any) => v.name === m.name).hostPath.path
    return { name: pod.metadata.name, script: c.args[1], env, hostPaths, spec: pod.spec, annotations: pod.metadata.annotations }
  })
}

/** Runs a pod's check as the pod would (node -e script, its env), the socket path mapped to the host path. */
async function runPod (pod: TestPod, extraEnv: Record<string, string> = {}): Promise<{ code: number, out: string }> {
  const env: Record<string, string> = { ...pod.env, EDGEMESH_TEST_NODE: 'local', ...extraEnv }
  const sock = env.EDGEMESH_TEST_AGENT_SOCKET
  if (sock != null) {
    const mount = Object.keys(pod.hostPaths).find((m) => sock.startsWith(m + '/'))!
    env.EDGEMESH_TEST_AGENT_SOCKET = pod.hostPaths[mount] + sock.slice(mount.length)
  }
  try {
    const { stdout } = await run(process.execPath, ['-e', pod.script], { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 60_000 })
    return { code: 0, out: stdout }
  } catch (err: any) {
    return { code: err.code ?? -1, out: String(err.stdout ?? '') + String(err.stderr ?? '') }
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'edgemesh-helmtest-'))
  httpPort = await freePort('tcp')
  dnsPort = await freePort('udp')
  const relayTcp = await freePort('tcp')
  const relayUdp = await freePort('udp')
  relay = await startServer(ServerConfig.parse({
    identityFile: join(dir, 'server.key'), announce: ['127.0.0.1'],
    listen: { host: '127.0.0.1', tcpPort: relayTcp, udpPort: relayUdp, http: `127.0.0.1:${httpPort}` }, logLevel: 'error'
  }))
  // the relay's Service, with 127.0.0.1 for its ClusterIP: the test's stand-in for the node's service proxy
  const relayService = {
    metadata: { namespace: NS, name: SERVER_SVC, resourceVersion: '7' },
    spec: { type: 'ClusterIP', clusterIP: '127.0.0.1', clusterIPs: ['127.0.0.1'], ports: [{ name: 'http', port: httpPort, protocol: 'TCP', targetPort: 'http' }] }
  }
  api = new FakeKubeApi(catalogLists({ services: [kubernetesService(), relayService], namespace: NS }))
  api.setMode('up')
  const kubeconfig = await api.start(join(dir, 'kubeconfig'))
  agent = await startAgent(AgentConfig.parse({
    nodeName: 'local',
    identityFile: join(dir, 'agent.key'),
    controlSocket: join(dir, 'run', 'agent.sock'),
    listen: { host: '127.0.0.1', udpPort: 0, tcpPort: 0 },
    relays: [{ host: '127.0.0.1', peerId: relay.peerId, tcpPort: relayTcp, udpPort: relayUdp }],
    kubernetes: { kubeconfig, namespace: NS, snapshotFile: join(dir, 'catalog.json'), syncTimeoutMs: 10_000 },
    dns: { listen: `127.0.0.1:${dnsPort}`, device: '', upstreams: ['127.0.0.1:9'] },
    logLevel: 'error'
  }))
}, 60_000)

afterAll(async () => {
  await agent?.stop()
  await relay?.stop()
  await api?.close()
  await rm(dir, { recursive: true, force: true })
})

describe('helm test pods', () => {
  it('render as test hooks: the chart image, restartPolicy Never, small resources, passed pods deleted', async () => {
    const pods = await renderTests('image.pullPolicy=Never')
    expect(pods.map((p) => p.name).sort()).toEqual([`${RELEASE}-edgemesh-test-agent`, `${RELEASE}-edgemesh-test-dns`, `${RELEASE}-edgemesh-test-relay`])
    for (const p of pods) {
      expect(p.annotations).toEqual({ 'helm.sh/hook': 'test', 'helm.sh/hook-delete-policy': 'before-hook-creation,hook-succeeded' })
      expect(p.spec.restartPolicy).toBe('Never')
      expect(p.spec.automountServiceAccountToken).toBe(false) // no API rights at all
      expect(p.spec.containers[0].imagePullPolicy).toBe('Never')
      expect(p.spec.containers[0].image).toMatch(/^ghcr\.io\/edgemesh-ts\/edgemesh:/)
      expect(p.spec.containers[0].resources.limits.memory).toBe('128Mi')
    }
    const byName = Object.fromEntries(pods.map((p) => [p.name.replace(`${RELEASE}-edgemesh-test-`, ''), p]))
    expect(byName.dns!.env).toMatchObject({ EDGEMESH_TEST_DNS_SERVER: '169.254.96.16:53', EDGEMESH_TEST_NAMES: `kubernetes.default.svc.cluster.local ${SERVER_SVC}.${NS}.svc.cluster.local` })
    expect(byName.relay!.env).toMatchObject({ EDGEMESH_TEST_URLS: `http://${SERVER_SVC}.${NS}.svc.cluster.local:9090/healthz` })
    expect(byName.agent!.hostPaths).toEqual({ '/run/edgemesh': '/run/edgemesh' })
    // without the mesh's DNS and proxy on the node, the relay is checked on its public address
    const plain = await renderTests('agent.proxy.enabled=false')
    expect(plain.find((p) => p.name.endsWith('-test-relay'))!.env).toEqual({ EDGEMESH_TEST_TIMEOUT_SECONDS: '60', EDGEMESH_TEST_URLS: 'http://127.0.0.1:9090/healthz' })
    // standalone agents only forward DNS: no cluster-name test
    expect((await renderTests('agent.kubernetes.enabled=false', 'agent.relays[0].host=127.0.0.1', `agent.relays[0].peerId=${relay.peerId}`)).map((p) => p.name).sort()).toEqual([`${RELEASE}-edgemesh-test-agent`, `${RELEASE}-edgemesh-test-relay`])
  })

  it('pass against a working relay and agent: every check PASS, exit 0', async () => {
    const pods = await renderTests(`server.http.port=${httpPort}`, `agent.dns.listen=127.0.0.1:${dnsPort}`, `agent.hostPaths.run=${join(dir, 'run')}`, 'tests.timeoutSeconds=30')
    const byName = Object.fromEntries(pods.map((p) => [p.name.replace(`${RELEASE}-edgemesh-test-`, ''), p]))

    const dns = await runPod(byName.dns!)
    expect(dns, dns.out).toMatchObject({ code: 0 })
    expect(dns.out).toContain('PASS dns kubernetes.default.svc.cluster.local: kubernetes.default.svc.cluster.local -> 10.96.0.1\n')
    expect(dns.out).toContain(`PASS dns ${SERVER_SVC}.${NS}.svc.cluster.local: ${SERVER_SVC}.${NS}.svc.cluster.local -> 127.0.0.1\n`)
    expect(dns.out).toMatch(/edgemesh helm test on local: 2 passed, 0 failed\n$/)

    const rel = await runPod(byName.relay!)
    expect(rel, rel.out).toMatchObject({ code: 0 })
    expect(rel.out).toContain(`PASS http http://${SERVER_SVC}.${NS}.svc.cluster.local:${httpPort}/healthz: GET`)
    expect(rel.out).toContain(`"peerId": "${relay.peerId}"`)

    // the agent registers with the relay in the background: the check retries until it has
    const ag = await eventually(async () => { const r = await runPod(byName.agent!); expect(r.code, r.out).toBe(0); return r }, 60_000, 1_000)
    expect(ag.out).toMatch(/^PASS agent on local: agent local: relays \[127\.0\.0\.1 udp up/m)
  }, 120_000)

  it('fail with the reason: no DNS listening, a name the catalog lacks, no agent socket (exit 1)', async () => {
    const pods = await renderTests(`agent.dns.listen=127.0.0.1:${await freePort('udp')}`, `agent.hostPaths.run=${join(dir, 'nowhere')}`, 'tests.timeoutSeconds=1')
    const byName = Object.fromEntries(pods.map((p) => [p.name.replace(`${RELEASE}-edgemesh-test-`, ''), p]))
    const dns = await runPod(byName.dns!)
    expect(dns.code).toBe(1)
    expect(dns.out).toMatch(/^FAIL dns kubernetes\.default\.svc\.cluster\.local: kubernetes\.default\.svc\.cluster\.local via the node-local DNS at 127\.0\.0\.1:\d+: (ECONNREFUSED|ETIMEOUT) \(.*is the agent running on this node/m)
    expect(dns.out).toMatch(/2 failed\n$/)

    const missing = await runPod(byName.dns!, { EDGEMESH_TEST_DNS_SERVER: `127.0.0.1:${dnsPort}`, EDGEMESH_TEST_NAMES: `nothere.${NS}.svc.cluster.local` })
    expect(missing.code).toBe(1)
    expect(missing.out).toContain(`FAIL dns nothere.${NS}.svc.cluster.local: nothere.${NS}.svc.cluster.local via the node-local DNS at 127.0.0.1:${dnsPort}: ENOTFOUND (NXDOMAIN: the agent's catalog has no such name`)

    const ag = await runPod(byName.agent!)
    expect(ag.code).toBe(1)
    expect(ag.out).toContain(`FAIL agent on local: the agent's control socket ${join(dir, 'nowhere')}/agent.sock on local: ENOENT (is the agent running on this node?)`)
  }, 60_000)
})
