// Runs the real edgemesh-agent binary on loopback against a test control plane, for catalog
// tests and benchmarks (the tunnel has no relay to reach here; only the catalog is exercised).
import { request } from 'node:http'
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { stringify } from 'yaml'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { callAgent } from '../../agent/control/cli.ts'
import { startProcess, type LabProcess } from '../lab/proc.ts'
import { AGENT_BIN, AGENT_NODE_FLAGS } from '../lab/mesh.ts'
import type { ControlPlane } from './harness.ts'

export interface CatalogAgent {
  nodeName: string
  socket: string
  configFile: string
  proc: LabProcess
  call<T = any>(method: string, path: string): Promise<T>
  /** the agent's /catalog summary (full=true adds every Service and endpoint) */
  catalog(full?: boolean): Promise<any>
  stop(): Promise<void>
}

export interface CatalogAgentOptions {
  cp: ControlPlane
  dir: string
  nodeName: string
  /** bearer token the agent uses (default: the admin token) */
  token?: string
  /** apiserver URL the agent uses (default: the control plane's; e.g. a TcpProxy in between) */
  server?: string
  namespace?: string
  /** readiness line to wait for (default: edgemesh-agent ready) */
  waitFor?: RegExp
  extraConfig?: Record<string, unknown>
  env?: Record<string, string>
}

let unreachableRelay: string | undefined
/** A relay identity nobody serves: the agent keeps trying it in the background. */
async function fakeRelayPeerId (): Promise<string> {
  unreachableRelay ??= peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
  return unreachableRelay
}

export async function writeCatalogAgentConfig (o: CatalogAgentOptions): Promise<{ configFile: string, socket: string }> {
  const kubeconfig = join(o.dir, `${o.nodeName}.kubeconfig`)
  await o.cp.writeKubeconfig(kubeconfig, o.token, o.server)
  const socket = join(o.dir, `${o.nodeName}.sock`)
  const configFile = join(o.dir, `${o.nodeName}.yaml`)
  await writeFile(configFile, stringify({
    nodeName: o.nodeName,
    identityFile: join(o.dir, `${o.nodeName}.key`),
    listen: { host: '127.0.0.1', udpPort: 0, tcpPort: 0 },
    controlSocket: socket,
    relays: [{ host: '127.0.0.1', peerId: await fakeRelayPeerId(), tcpPort: 9, udpPort: 9 }],
    kubernetes: { kubeconfig, namespace: o.namespace ?? 'edgemesh', snapshotFile: join(o.dir, `${o.nodeName}-catalog.json`), snapshotIntervalSeconds: 1, syncTimeoutMs: 5000 },
    logLevel: 'info',
    ...(o.extraConfig ?? {})
  }))
  return { configFile, socket }
}

export async function startCatalogAgent (o: CatalogAgentOptions): Promise<CatalogAgent> {
  const { configFile, socket } = await writeCatalogAgentConfig(o)
  const proc = startProcess([process.execPath, ...AGENT_NODE_FLAGS, AGENT_BIN, '--config', configFile], { logFile: join(o.dir, `${o.nodeName}.log`), ...(o.env != null ? { env: o.env } : {}) })
  try {
    await proc.waitForLine(o.waitFor ?? /edgemesh-agent ready/, 60_000)
  } catch (err) {
    await proc.kill('SIGKILL')
    throw new Error(`agent ${o.nodeName} did not start: ${(err as Error).message}\n${proc.stdout().slice(-3000)}\n${proc.stderr().slice(-3000)}`)
  }
  const call = async <T = any>(method: string, path: string): Promise<T> => await callAgent<T>(socket, method, path, 30_000)
  return {
    nodeName: o.nodeName,
    socket,
    configFile,
    proc,
    call,
    catalog: async (full = false) => await call('GET', `/catalog${full ? '?full=1' : ''}`),
    stop: async () => { await proc.kill('SIGTERM', 5000) }
  }
}

export interface CatalogEvent { version: number, source: string, at: number, changes: Array<{ kind: string, type: string, key: string }> }

/** Streams the agent's /catalog/events; call close() when done. */
export function catalogEvents (socket: string, onEvent: (ev: CatalogEvent, receivedAt: number) => void): { ready: Promise<void>, close: () => void } {
  let close = (): void => {}
  const ready = new Promise<void>((resolve, reject) => {
    const req = request({ socketPath: socket, path: '/catalog/events', method: 'GET' }, (res) => {
      res.setEncoding('utf8')
      let partial = ''
      let first = true
      res.on('data', (chunk: string) => {
        const now = performance.now() + performance.timeOrigin
        const lines = (partial + chunk).split('\n')
        partial = lines.pop() ?? ''
        for (const line of lines) {
          if (line === '') continue
          if (first) { first = false; resolve(); continue }
          onEvent(JSON.parse(line) as CatalogEvent, now)
        }
      })
    })
    req.on('error', reject)
    req.end()
    close = () => { req.destroy() }
  })
  return { ready, close: () => { close() } }
}
