// SOCKS5 and SSH to edge nodes by name, in the NAT lab against the real apiserver, with the
// tools operators already use: a real OpenSSH sshd on a host behind a cone NAT (b1) and one
// behind a symmetric NAT (c1); from another site (a1) `ssh` with each ProxyCommand style
// (OpenBSD `nc -X 5 -x`, EdgeMesh's documented `ncat --proxy-type socks5`, `edgemesh nc`) runs a
// command on both (host keys pinned to the node names, so the right node answered); scp of 50 MiB
// each way with equal SHA-256 and the path used; `curl --socks5-hostname` to a Service whose
// endpoint is behind the symmetric NAT; every refusal with its exact reply code and log line;
// 200 concurrent SOCKS connections through one agent, every byte echoed intact.
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab, type LabPod } from '../lab/lab.ts'
import { startK8sMesh, type K8sMesh } from '../lab/k8s-mesh.ts'
import { CLI_BIN, metricValue } from '../lab/mesh.ts'
import { eventually } from '../lab/wait.ts'
import { clientKeys, sshOptions, startSshd, type SshKeys } from '../lab/sshd.ts'

const ROOT = join(import.meta.dirname, '../..')
const WORKLOAD = join(ROOT, 'test/lab/workload.mjs')
const PROBE = join(ROOT, 'test/lab/socks-probe.mjs')
const NODE = process.execPath
const SOCKS = '169.254.96.16:10800' // the address EdgeMesh documents, on every node
const LOOPBACK_SOCKS = '127.0.0.1:10800' // what `kubectl port-forward` reaches
const ECHO_PORT = 7000
const MiB = 1024 * 1024

let lab: Lab
let k: K8sMesh
let keys: SshKeys
let dir: string
let servicePod: LabPod

const socks5 = (allowedPorts: number[], extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  listen: [SOCKS, LOOPBACK_SOCKS], device: 'edgemesh0', allowedPorts, ...extra
})

/** The three ProxyCommand styles, each as ssh gets it (%h %p filled in by ssh). */
const STYLES: Array<{ name: string, command: string, suffix: string }> = [
  { name: 'OpenBSD nc -X 5 -x', command: `nc.openbsd -X 5 -x ${SOCKS} %h %p`, suffix: '' },
  { name: 'ncat --proxy-type socks5 (EdgeMesh\'s documented command)', command: `ncat --proxy-type socks5 --proxy ${SOCKS} %h %p`, suffix: '' },
  { name: 'edgemesh nc', command: `${NODE} ${CLI_BIN} nc --proxy ${SOCKS} %h %p`, suffix: '.edge' }
]

async function ssh (from: string, proxyCommand: string, target: string, command: string, timeoutMs = 60_000): Promise<{ code: number, stdout: string, stderr: string }> {
  return await lab.exec(from, ['ssh', ...sshOptions(keys, proxyCommand), `root@${target}`, command], { timeoutMs })
}

/** one raw SOCKS5 exchange from a lab host (test/lab/socks-probe.mjs request) */
async function socksRequest (from: string, proxy: string, command: 'connect' | 'bind' | 'udp', atyp: 'domain' | 'ipv4', host: string, port: number, creds: string[] = []): Promise<{ method?: number, auth?: number, reply?: number, closed: boolean }> {
  const r = await lab.exec(from, [NODE, PROBE, 'request', proxy, command, atyp, host, String(port), ...creds], { timeoutMs: 60_000 })
  if (r.code !== 0) throw new Error(`socks-probe request: exit ${r.code} ${r.stderr}`)
  return JSON.parse(r.stdout.trim())
}

const peerPath = async (from: string, node: string): Promise<string> =>
  (await k.mesh.status(from)).peers.find((p: any) => p.node === node)?.path ?? 'none'

/** the agent's log line for a refusal (its exact reason field and the target on one line: 'port-not-allowed' must not match 'remote-port-not-allowed') */
async function refusalLogged (host: string, reason: string, target: string): Promise<string> {
  return await k.mesh.agent(host).proc.waitForLine(new RegExp(`(?=.*"reason":"${reason}")(?=.*${target.replace(/\./g, '\\.')})`), 10_000)
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edgemesh-socks5-e2e-'))
  lab = await createLab({ sites: [{ name: 'a', nat: 'cone' }, { name: 'b', nat: 'cone' }, { name: 'c', nat: 'symmetric' }, { name: 'd', nat: 'cone' }] })
  keys = await clientKeys(join(dir, 'ssh'))
  await startSshd(lab, 'b1', keys, ['edge-b1', 'edge-b1.edge'])
  await startSshd(lab, 'c1', keys, ['edge-c1', 'edge-c1.edge'])
  // a node port the 200 concurrent connections and the bench use: an echo server on b1 itself
  const echo = lab.spawn('b1', [NODE, WORKLOAD, 'tcp-echo', String(ECHO_PORT)])
  await echo.waitForLine(/listening/, 10_000)
  servicePod = await lab.addPod('c1')
  const web = lab.spawn(servicePod, [NODE, WORKLOAD, 'http', 'c-web', '8080'])
  await web.waitForLine(/listening/, 10_000)
  writeFileSync(join(dir, 'socks-user'), 'ops\n')
  writeFileSync(join(dir, 'socks-password'), 'correct horse\n')
  k = await startK8sMesh(lab, {
    agents: ['a1', 'b1', 'c1', 'd1'],
    diagnostics: true,
    agentConfig: (host) => ({
      proxy: { minSyncIntervalMs: 100, resyncSeconds: 5 },
      // a1 (where the operator is) lets 2222 out: b1 and c1 do not allow it, so a1's SOCKS
      // server acts as a client that skips the local check and the target agent must refuse
      socks5: host === 'a1'
        ? socks5([22, 2222, ECHO_PORT])
        : host === 'c1'
          ? socks5([22], { auth: { usernameFile: join(dir, 'socks-user'), passwordFile: join(dir, 'socks-password') } })
          : socks5([22, ECHO_PORT])
    })
  })
  await k.admin('POST', '/api/v1/namespaces', { metadata: { name: 'shop' } })
  await k.admin('POST', '/api/v1/namespaces/shop/services', { metadata: { name: 'web', namespace: 'shop' }, spec: { ports: [{ name: 'http', port: 80, targetPort: 8080 }] } })
  await k.admin('POST', '/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices', {
    metadata: { name: 'web-1', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: [{ addresses: [servicePod.ip], conditions: { ready: true }, nodeName: 'edge-c1' }]
  })
}, 300_000)

afterAll(async () => {
  await k?.stop()
  await lab?.teardown()
  if (dir != null) rmSync(dir, { recursive: true, force: true })
})

describe('SOCKS5 and SSH to edge nodes by name (lab + real apiserver)', () => {
  it('ssh with each ProxyCommand style runs a command on the node behind the cone NAT and on the one behind the symmetric NAT; the path is reported', async () => {
    for (const style of STYLES) {
      for (const [node, ip] of [['edge-b1', lab.host('b1').ip], ['edge-c1', lab.host('c1').ip]] as const) {
        const t0 = performance.now()
        // the first connection to a node may wait for the tunnel's dial (punching, relay)
        const r = await eventually(async () => {
          const res = await ssh('a1', style.command, `${node}${style.suffix}`, 'ip -4 -o addr show dev eth0 | awk \'{print $4}\'; echo "ran as $(id -un)"')
          if (res.code !== 0) throw new Error(`${style.name} -> ${node}: exit ${res.code}: ${res.stderr.trim()}`)
          return res
        }, 60_000, 500)
        const path = await peerPath('a1', node)
        console.log(`[socks5] ssh via ${style.name} to ${node}${style.suffix}: ${((performance.now() - t0) / 1000).toFixed(2)} s, path ${path}`)
        expect(r.stdout).toBe(`${ip}/24\nran as root\n`)
        expect(r.stderr).toBe('')
      }
    }
    expect(await peerPath('a1', 'edge-b1')).toMatch(/^direct-/)
    expect(await peerPath('a1', 'edge-c1')).toMatch(/^relay-/) // symmetric NAT: relayed
    expect(metricValue(await k.mesh.agentMetrics('a1'), 'edgemesh_socks5_connections_total', 'result="ok"')).toBeGreaterThanOrEqual(6)
  }, 240_000)

  it('scp of 50 MiB each way through edgemesh nc, to both nodes: equal SHA-256', async () => {
    const blob = randomBytes(50 * MiB)
    const want = createHash('sha256').update(blob).digest('hex')
    const local = join(dir, 'blob.bin')
    writeFileSync(local, blob)
    const nc = `${NODE} ${CLI_BIN} nc --proxy ${SOCKS} %h %p`
    for (const node of ['edge-b1', 'edge-c1']) {
      // the lab's hosts share one filesystem: each copy goes to a path of its own
      const remoteUp = join(dir, `${node}-up.bin`)
      const back = join(dir, `${node}-down.bin`)
      let t0 = performance.now()
      const up = await lab.exec('a1', ['scp', '-q', ...sshOptions(keys, nc), local, `root@${node}.edge:${remoteUp}`], { timeoutMs: 180_000 })
      const upS = (performance.now() - t0) / 1000
      expect(up.code, up.stderr).toBe(0)
      const sum = await ssh('a1', nc, `${node}.edge`, `sha256sum ${remoteUp}`)
      expect(sum.stdout.split(' ')[0]).toBe(want)
      t0 = performance.now()
      const down = await lab.exec('a1', ['scp', '-q', ...sshOptions(keys, nc), `root@${node}.edge:${remoteUp}`, back], { timeoutMs: 180_000 })
      const downS = (performance.now() - t0) / 1000
      expect(down.code, down.stderr).toBe(0)
      expect(createHash('sha256').update(readFileSync(back)).digest('hex')).toBe(want)
      const path = await peerPath('a1', node)
      console.log(`[socks5] scp 50 MiB to ${node} over ${path}: up ${upS.toFixed(1)} s (${(50 * 8 * 1.048576 / upS).toFixed(0)} Mbit/s), down ${downS.toFixed(1)} s (${(50 * 8 * 1.048576 / downS).toFixed(0)} Mbit/s)`)
      rmSync(remoteUp, { force: true }); rmSync(back, { force: true })
    }
  }, 600_000)

  it('curl --socks5-hostname reaches a Service by name whose endpoint is behind the symmetric NAT', async () => {
    for (const name of ['web.shop', 'web.shop.svc.cluster.local']) {
      const body = await eventually(async () => {
        const r = await lab.exec('a1', ['curl', '-sS', '--max-time', '20', '--socks5-hostname', SOCKS, `http://${name}/`], { timeoutMs: 30_000 })
        if (r.code !== 0) throw new Error(`curl ${name}: exit ${r.code} ${r.stderr}`)
        return r.stdout.trim()
      }, 30_000, 250)
      expect(body).toBe('c-web')
    }
    // a port that is not the Service's is refused as not allowed (curl names the reply)
    const r = await lab.exec('a1', ['curl', '-sS', '--max-time', '20', '--socks5-hostname', SOCKS, 'http://web.shop:8081/'], { timeoutMs: 30_000 })
    expect(r.code).toBe(97) // CURLE_PROXY
    expect(await socksRequest('a1', SOCKS, 'connect', 'domain', 'web.shop', 8081)).toMatchObject({ method: 0, reply: 2 })
  }, 120_000)

  it('refusals carry the exact reply code and leave a log line: IP target, unknown node, port outside the allow-list (local and remote), BIND, UDP ASSOCIATE', async () => {
    const cases: Array<{ what: string, args: Parameters<typeof socksRequest>, reply: number, host: string, reason: string, target: string }> = [
      { what: 'IPv4 target', args: ['a1', SOCKS, 'connect', 'ipv4', lab.host('b1').ip, 22], reply: 8, host: 'a1', reason: 'address-type-not-supported', target: lab.host('b1').ip },
      { what: 'unknown node', args: ['a1', SOCKS, 'connect', 'domain', 'edge-nope', 22], reply: 4, host: 'a1', reason: 'unknown-target', target: 'edge-nope' },
      { what: 'port outside the allow-list (local check)', args: ['a1', SOCKS, 'connect', 'domain', 'edge-b1', 25], reply: 2, host: 'a1', reason: 'port-not-allowed', target: 'edge-b1' },
      { what: 'port the target node does not allow (remote check)', args: ['a1', SOCKS, 'connect', 'domain', 'edge-c1.edge', 2222], reply: 2, host: 'a1', reason: 'remote-port-not-allowed', target: 'edge-c1' },
      { what: 'BIND', args: ['a1', SOCKS, 'bind', 'domain', 'edge-b1', 22], reply: 7, host: 'a1', reason: 'command-not-supported', target: 'BIND' },
      { what: 'UDP ASSOCIATE', args: ['a1', SOCKS, 'udp', 'domain', 'edge-b1', 22], reply: 7, host: 'a1', reason: 'command-not-supported', target: 'UDP ASSOCIATE' }
    ]
    const remoteBefore = metricValue(await k.mesh.agentMetrics('c1'), 'edgemesh_socks5_remote_requests_total', 'result="port-not-allowed"')
    for (const c of cases) {
      const r = await socksRequest(...c.args)
      expect({ what: c.what, ...r }).toEqual({ what: c.what, method: 0, reply: c.reply, closed: true })
      const line = await refusalLogged(c.host, c.reason, c.target)
      console.log(`[socks5] ${c.what}: reply ${r.reply}; log: ${line.slice(0, 200)}`)
    }
    // the target agent is the authority: it refused 2222 itself and counted it
    expect(metricValue(await k.mesh.agentMetrics('c1'), 'edgemesh_socks5_remote_requests_total', 'result="port-not-allowed"')).toBe(remoteBefore + 1)
    const m = await k.mesh.agentMetrics('a1')
    for (const reason of ['address-type-not-supported', 'unknown-target', 'port-not-allowed', 'remote-port-not-allowed', 'command-not-supported']) {
      expect(metricValue(m, 'edgemesh_socks5_refusals_total', `reason="${reason}"`), reason).toBeGreaterThanOrEqual(1)
    }
  }, 120_000)

  it('with auth on: wrong credentials get the RFC 1929 failure and a log line, no credentials get 0xFF; the right ones connect', async () => {
    expect(await socksRequest('c1', LOOPBACK_SOCKS, 'connect', 'domain', 'edge-b1', 22, ['ops', 'wrong horse'])).toEqual({ method: 2, auth: 1, closed: true })
    await refusalLogged('c1', 'auth-failed', '')
    expect(await socksRequest('c1', LOOPBACK_SOCKS, 'connect', 'domain', 'edge-b1', 22)).toEqual({ method: 255, closed: true })
    await refusalLogged('c1', 'no-acceptable-method', '')
    expect(await socksRequest('c1', LOOPBACK_SOCKS, 'connect', 'domain', 'edge-b1', 22, ['ops', 'correct horse'])).toEqual({ method: 2, auth: 0, reply: 0, closed: false })
    // and edgemesh nc with the credentials from files runs ssh through it
    const nc = `${NODE} ${CLI_BIN} nc --proxy ${LOOPBACK_SOCKS} --user ops --password-file ${join(dir, 'socks-password')} %h %p`
    const r = await ssh('c1', nc, 'edge-b1.edge', 'echo authenticated')
    expect(`${r.code} ${r.stdout}${r.stderr}`).toBe('0 authenticated\n')
    const m = await k.mesh.agentMetrics('c1')
    expect(metricValue(m, 'edgemesh_socks5_refusals_total', 'reason="auth-failed"')).toBeGreaterThanOrEqual(1)
  }, 120_000)

  it('200 concurrent SOCKS connections through one agent: all succeed, every byte echoed intact', async () => {
    const r = await lab.exec('a1', [NODE, PROBE, 'concurrent', LOOPBACK_SOCKS, 'edge-b1', String(ECHO_PORT), '200', String(64 * 1024)], { timeoutMs: 180_000 })
    expect(r.code, r.stderr).toBe(0)
    const out = JSON.parse(r.stdout.trim())
    console.log(`[socks5] 200 concurrent connections (64 KiB echoed each) in ${out.allMs} ms: ${JSON.stringify(out)}`)
    expect(out).toMatchObject({ ok: 200, failed: 0, errors: {} })
  }, 240_000)

  it('a node that is offline: network unreachable (0x03), logged, and edgemesh nc says so in one line', async () => {
    // d1 must have been reachable first: its agent is known to the mesh (Lease, peer directory)
    await eventually(async () => { expect(await socksRequest('a1', SOCKS, 'connect', 'domain', 'edge-d1', 22)).toMatchObject({ reply: 5 }) }, 60_000, 500) // nothing listens on d1:22
    await k.mesh.agent('d1').proc.kill('SIGTERM')
    const r = await eventually(async () => {
      const res = await socksRequest('a1', SOCKS, 'connect', 'domain', 'edge-d1', 22)
      expect(res.reply).toBe(3)
      return res
    }, 60_000, 500)
    expect(r).toEqual({ method: 0, reply: 3, closed: true })
    await refusalLogged('a1', 'node-unreachable', 'edge-d1')
    const nc = await lab.exec('a1', [NODE, CLI_BIN, 'nc', '--proxy', SOCKS, 'edge-d1', '22'], { timeoutMs: 60_000 })
    expect({ code: nc.code, stderr: nc.stderr }).toEqual({ code: 1, stderr: 'error: edge-d1:22: network unreachable (the node is offline: the tunnel cannot reach it) (SOCKS5 reply 3)\n' })
  }, 180_000)
})
