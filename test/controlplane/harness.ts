// A real etcd + kube-apiserver for tests, benchmarks and the demo (envtest style: no
// controllers run, tests create Nodes, Pods and EndpointSlices themselves). Binaries come from
// test/controlplane/build.sh (cached under ~/.cache/edgemesh/bin). TLS is real: a throw-away CA
// signs the serving certificate, so clients verify the server like they would in a cluster.
import { execFile } from 'node:child_process'
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises'
import { request as httpsRequest } from 'node:https'
import { freePort } from '../lab/ports.ts'
import { homedir, tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { startProcess, type LabProcess, type StartOpts } from '../lab/proc.ts'
import { sleep } from '../lab/wait.ts'

const execFileP = promisify(execFile)

export const CONTROL_PLANE_BIN = process.env.EDGEMESH_BIN ?? join(homedir(), '.cache/edgemesh/bin')
export const HELM_BIN = join(CONTROL_PLANE_BIN, 'helm')

export interface ControlPlaneOptions {
  /** address the apiserver binds to and puts in its certificate (default 127.0.0.1) */
  host?: string
  /** spawns a long-running process (default: on this host); the lab passes its netns spawner */
  spawn?: (argv: string[], opts?: StartOpts) => LabProcess
  /** extra kube-apiserver flags, e.g. ['--watch-cache=false'] */
  apiserverFlags?: string[]
  /** more IP addresses the serving certificate is valid for (e.g. where a lab reaches it) */
  extraSans?: string[]
  /** fixed ports (inside a dedicated netns); default: free loopback ports */
  ports?: { etcdClient: number, etcdPeer: number, apiserver: number }
  /**
   * For a cluster with kubelets and a controller-manager (test/cluster): the ServiceAccount
   * admission plugin on, Node + RBAC authorization and NodeRestriction admission. Default off:
   * envtest style, no controller creates ServiceAccounts, RBAC only.
   */
  withNodes?: boolean
}

export interface ControlPlane {
  url: string
  host: string
  port: number
  caPem: string
  adminToken: string
  dir: string
  etcdUrl: string
  /** kubeconfig for the admin (system:masters) or for the given bearer token; server overrides the URL (e.g. a proxy) */
  writeKubeconfig(file: string, token?: string, server?: string): Promise<void>
  /** SIGKILL (or SIGTERM) the apiserver; etcd keeps the data */
  stopApiserver(signal?: NodeJS.Signals): Promise<void>
  startApiserver(): Promise<void>
  /** Compacts etcd's history up to its current revision (old resourceVersions then answer 410 Gone). */
  compactEtcd(): Promise<number>
  apiserverLog(): string
  stop(): Promise<void>
}

/** Status code of a GET verified against ca (0 when unreachable). */
async function httpsGet (url: string, ca: string, token: string): Promise<number> {
  return await new Promise((resolve) => {
    const req = httpsRequest(url, { ca, headers: { authorization: `Bearer ${token}` }, timeout: 1000 }, (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.on('error', () => { resolve(0) })
    req.on('timeout', () => { req.destroy() })
    req.end()
  })
}

function requireBinaries (): void {
  for (const b of ['etcd', 'kube-apiserver']) {
    if (!existsSync(join(CONTROL_PLANE_BIN, b))) {
      throw new Error(`control plane: ${join(CONTROL_PLANE_BIN, b)} is missing; run \`bash test/controlplane/build.sh\` (npm test does this)`)
    }
  }
}

async function openssl (args: string[], cwd: string): Promise<void> {
  try { await execFileP('openssl', args, { cwd }) } catch (err: any) { throw new Error(`control plane: openssl ${args[0]} failed: ${err.stderr ?? err.message}`) }
}

/** CA + serving certificate for the apiserver (SANs: loopback, the bind address, in-cluster names). */
async function makeCerts (dir: string, ips: string[]): Promise<void> {
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-subj', '/CN=edgemesh-test-ca', '-keyout', 'ca.key', '-out', 'ca.crt'], dir)
  await writeFile(join(dir, 'san.ext'), `subjectAltName=${[...new Set(['127.0.0.1', ...ips])].map((ip) => `IP:${ip}`).join(',')},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n`)
  await openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=kube-apiserver',
    '-keyout', 'serving.key', '-out', 'serving.csr'], dir)
  await openssl(['x509', '-req', '-in', 'serving.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2',
    '-extfile', 'san.ext', '-out', 'serving.crt'], dir)
}

export async function startControlPlane (opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  requireBinaries()
  const host = opts.host ?? '127.0.0.1'
  const spawn = opts.spawn ?? startProcess
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-cp-'))
  const ports = opts.ports ?? { etcdClient: await freePort(), etcdPeer: await freePort(), apiserver: await freePort() }
  const adminToken = randomBytes(24).toString('hex')
  const etcdUrl = `http://127.0.0.1:${ports.etcdClient}`
  const url = `https://${host}:${ports.apiserver}`
  let etcd: LabProcess | undefined
  let api: LabProcess | undefined
  let apiLog = ''

  const sa = generateKeyPairSync('rsa', { modulusLength: 2048 })
  await writeFile(join(dir, 'sa.key'), sa.privateKey.export({ type: 'pkcs8', format: 'pem' }))
  await writeFile(join(dir, 'sa.pub'), sa.publicKey.export({ type: 'spki', format: 'pem' }))
  await writeFile(join(dir, 'tokens.csv'), `${adminToken},admin,admin-uid,"system:masters"\n`)
  await makeCerts(dir, [host, ...(opts.extraSans ?? [])])
  const caPem = await readFile(join(dir, 'ca.crt'), 'utf8')

  const healthy = async (u: string, init?: RequestInit): Promise<boolean> => {
    try { return (await fetch(u, { ...init, signal: AbortSignal.timeout(1000) })).ok } catch { return false }
  }
  const waitFor = async (what: string, proc: LabProcess, ok: () => Promise<boolean>, timeoutMs: number): Promise<void> => {
    const deadline = Date.now() + timeoutMs
    let exited = false
    void proc.exited.then(() => { exited = true })
    while (!(await ok())) {
      if (exited) throw new Error(`control plane: ${what} exited during start:\n${proc.stderr().slice(-3000)}`)
      if (Date.now() > deadline) throw new Error(`control plane: ${what} not ready after ${timeoutMs} ms:\n${proc.stderr().slice(-3000)}`)
      await sleep(50)
    }
  }

  const startApiserver = async (): Promise<void> => {
    api = spawn([join(CONTROL_PLANE_BIN, 'kube-apiserver'),
      `--etcd-servers=${etcdUrl}`,
      `--advertise-address=${host}`, `--bind-address=${host}`, `--secure-port=${ports.apiserver}`,
      `--tls-cert-file=${join(dir, 'serving.crt')}`, `--tls-private-key-file=${join(dir, 'serving.key')}`,
      `--client-ca-file=${join(dir, 'ca.crt')}`,
      '--service-cluster-ip-range=10.96.0.0/16',
      opts.withNodes === true ? '--authorization-mode=Node,RBAC' : '--authorization-mode=RBAC',
      '--service-account-issuer=https://kubernetes.default.svc',
      `--service-account-key-file=${join(dir, 'sa.pub')}`,
      `--service-account-signing-key-file=${join(dir, 'sa.key')}`,
      `--token-auth-file=${join(dir, 'tokens.csv')}`,
      '--allow-privileged=true',
      // like envtest: no controller-manager creates default ServiceAccounts or their tokens
      ...(opts.withNodes === true ? ['--enable-admission-plugins=NodeRestriction'] : ['--disable-admission-plugins=ServiceAccount']),
      '--endpoint-reconciler-type=none',
      ...(opts.apiserverFlags ?? [])])
    // The process API only keeps the tail; keep a copy across restarts for diagnostics.
    const proc = api
    void proc.exited.then(() => { apiLog += proc.stderr().slice(-20_000) })
    await waitFor('kube-apiserver', proc, async () => (await httpsGet(`${url}/readyz`, caPem, adminToken)) === 200, 60_000)
  }

  try {
    etcd = spawn([join(CONTROL_PLANE_BIN, 'etcd'), '--name=default', `--data-dir=${join(dir, 'etcd')}`,
      `--listen-client-urls=${etcdUrl}`, `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=http://127.0.0.1:${ports.etcdPeer}`, `--initial-advertise-peer-urls=http://127.0.0.1:${ports.etcdPeer}`,
      `--initial-cluster=default=http://127.0.0.1:${ports.etcdPeer}`,
      '--unsafe-no-fsync=true', '--log-level=warn', '--logger=zap', '--quota-backend-bytes=8589934592'])
    const etcdProc = etcd
    await waitFor('etcd', etcdProc, async () => await healthy(`${etcdUrl}/health`), 30_000)
    await startApiserver()
  } catch (err) {
    await api?.kill('SIGKILL')
    await etcd?.kill('SIGKILL')
    await rm(dir, { recursive: true, force: true })
    throw err
  }

  return {
    url,
    host,
    port: ports.apiserver,
    caPem,
    adminToken,
    dir,
    etcdUrl,
    async writeKubeconfig (file, token = adminToken, server = url) {
      await writeFile(file, [
        'apiVersion: v1', 'kind: Config',
        `clusters: [{name: test, cluster: {server: "${server}", certificate-authority-data: ${Buffer.from(caPem).toString('base64')}}}]`,
        `users: [{name: user, user: {token: "${token}"}}]`,
        'contexts: [{name: test, context: {cluster: test, user: user}}]',
        'current-context: test', ''].join('\n'), { mode: 0o600 })
    },
    async stopApiserver (signal = 'SIGKILL') {
      await api?.kill(signal, 2000)
      api = undefined
    },
    startApiserver,
    async compactEtcd () {
      const post = async (path: string, body: unknown): Promise<any> => {
        const res = await fetch(`${etcdUrl}${path}`, { method: 'POST', body: JSON.stringify(body) })
        if (!res.ok) throw new Error(`etcd ${path}: ${res.status} ${await res.text()}`)
        return await res.json()
      }
      // etcd's gRPC gateway: the current revision from a range read, then compact up to it.
      const head = await post('/v3/kv/range', { key: Buffer.from('/').toString('base64'), limit: 1 })
      const revision = Number(head.header.revision)
      await post('/v3/kv/compaction', { revision, physical: true })
      return revision
    },
    apiserverLog: () => apiLog + (api?.stderr() ?? ''),
    async stop () {
      await api?.kill('SIGTERM', 3000)
      await etcd?.kill('SIGTERM', 3000)
      await rm(dir, { recursive: true, force: true })
    }
  }
}
