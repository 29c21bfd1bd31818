// edgemesh-agent: the node agent's composition root. Today: catalog + peer registry (or a
// static peers file), node-local DNS, identity, tunnel, the ClusterIP proxy, local control API
// and metrics. SOCKS5 plugs in here when it arrives.
import { AgentConfig, loadConfig, loadPsk } from '../shared/config.ts'
import { parseDaemonArgs } from '../shared/cli-main.ts'
import { createLogger } from '../shared/logging.ts'
import { Metrics } from '../shared/metrics.ts'
import { parseHostPort, startHttp, stopHttp } from '../shared/http.ts'
import { Catalog } from './catalog/catalog.ts'
import { KubeClient, loadKubeCredentials } from './catalog/kube-client.ts'
import type { Tunnel } from './tunnel/tunnel.ts'
import type { PeerDirectory } from './tunnel/directory.ts'
import type { CatalogPeerDirectory, LeasePublisher } from './catalog/peer-registry.ts'

export interface RunningAgent { tunnel: Tunnel, catalog?: Catalog, stop: () => Promise<void> }

/**
 * Everything that pulls in libp2p (~700 ms of module loading with the tunnel) is imported only
 * after the catalog has synced: loaded during the first LIST it competed for the one thread
 * and delayed the sync by ~500 ms (bench:catalog), so DNS and the proxy would wait for it.
 */
async function loadTunnelSide (): Promise<typeof import('./tunnel/tunnel.ts') & typeof import('./tunnel/diagnostics.ts') & typeof import('./control/api.ts') & typeof import('../shared/identity.ts') & typeof import('./tunnel/directory.ts') & typeof import('./catalog/peer-registry.ts')> {
  const parts = await Promise.all([import('./tunnel/tunnel.ts'), import('./tunnel/diagnostics.ts'), import('./control/api.ts'), import('../shared/identity.ts'), import('./tunnel/directory.ts'), import('./catalog/peer-registry.ts')])
  return Object.assign({}, ...parts)
}

/**
 * One memory-reducing GC shortly after a burst of garbage (the first LIST of 10k Services
 * parses ~50 MB of JSON that dies at once; loading libp2p): returns the memory to the OS now
 * instead of whenever V8's memory reducer gets to it. A plain gc() shrinks the heap but not
 * the RSS; the 'last-resort' flavour (V8's low-memory notification) uncommits the pages too.
 * Needs node --expose-gc (the manifests pass it); a no-op without.
 */
type GcOptions = { type: 'major', execution: 'sync', flavor: 'last-resort' }
function compactHeapSoon (): () => void {
  let timer: NodeJS.Timeout | undefined
  return () => {
    const gc = (globalThis as { gc?: (opts: GcOptions) => void }).gc
    if (gc == null || timer != null) return
    timer = setTimeout(() => { timer = undefined; gc({ type: 'major', execution: 'sync', flavor: 'last-resort' }) }, 1_000)
    timer.unref()
  }
}

export async function startAgent (config: AgentConfig): Promise<RunningAgent> {
  const compactHeap = compactHeapSoon()
  const log = createLogger({ name: 'edgemesh-agent', level: config.logLevel }).child({ node: config.nodeName })
  const metrics = new Metrics()

  // With Kubernetes, peers come from the registry (static entries only fill gaps); without it
  // the peers file is the whole directory.
  let catalog: Catalog | undefined
  let kube: KubeClient | undefined
  if (config.kubernetes != null) {
    const k = config.kubernetes
    const creds = await loadKubeCredentials(k.kubeconfig, k.apiServer)
    kube = new KubeClient({ ...creds, watchIdleMs: k.watchIdleSeconds * 1000 })
    log.info({ apiServer: creds.server, auth: creds.cert != null ? 'client certificate' : 'token' }, 'using the Kubernetes API')
    catalog = new Catalog({ client: kube, namespace: k.namespace, snapshotFile: k.snapshotFile, persistIntervalMs: k.snapshotIntervalSeconds * 1000, syncTimeoutMs: k.syncTimeoutMs, log: log.child({ component: 'catalog' }), metrics, onBulkLoad: compactHeap })
    await catalog.start()
  }
  // DNS needs only the catalog: it answers before the tunnel side is even loaded
  const dns = config.dns != null ? await (await import('./dns/dns.ts')).startDns({ config: config.dns, catalog, metrics, log: log.child({ component: 'dns' }) }) : undefined

  const m = await loadTunnelSide()
  const identity = await m.loadOrCreateIdentity(config.identityFile)
  if (identity.created) log.info({ keyFile: config.identityFile, peerId: identity.peerId.toString() }, 'generated a new node identity')
  const psk = await loadPsk(config.pskFile)
  if (psk == null) log.warn('NO PRE-SHARED KEY: this agent\'s mesh is open to any key. Its relays let anyone register and learn agents\' addresses, and nothing but the peer directory keeps other keys out. Set pskFile to the mesh\'s swarm.key (the Helm chart creates one by default; see manifests/README.md, "Private network (PSK)")')
  const staticPeers = config.peersFile != null ? await m.StaticPeerDirectory.fromFile(config.peersFile) : new m.StaticPeerDirectory()
  staticPeers.watch(2_000, (err) => { log.warn({ err: (err as Error).message }, 'peers file reload failed; keeping the last good one') })
  let registry: CatalogPeerDirectory | undefined
  if (catalog != null) registry = new m.CatalogPeerDirectory(catalog, log.child({ component: 'peers' }), staticPeers)
  const directory: PeerDirectory = registry ?? staticPeers

  const tunnel = await m.Tunnel.start({
    nodeName: config.nodeName, privateKey: identity.privateKey, config, directory,
    ...(psk != null ? { psk } : {}), log: log.child({ component: 'tunnel' }), metrics
  })
  if (config.diagnostics) await m.registerDiagnostics(tunnel)
  let publisher: LeasePublisher | undefined
  if (kube != null && config.kubernetes != null) {
    publisher = new m.LeasePublisher({
      client: kube, namespace: config.kubernetes.namespace, nodeName: config.nodeName, peerId: tunnel.peerId.toString(),
      addresses: m.localTcpAddresses(config.listen.tcpPort, config.tunnel.advertise), leaseDurationSeconds: config.kubernetes.leaseDurationSeconds,
      log: log.child({ component: 'peers' })
    })
    publisher.start()
  }
  let proxy: import('./proxy/proxy.ts').ServiceProxy | undefined
  if (config.proxy != null) {
    if (catalog == null) throw new Error('proxy: needs the catalog (configure `kubernetes`) to know Services and endpoints')
    const { ServiceProxy } = await import('./proxy/proxy.ts')
    proxy = await ServiceProxy.start({
      config: config.proxy, nodeName: config.nodeName, clusterDomain: config.dns?.clusterDomain ?? 'cluster.local',
      catalog, ...(kube != null ? { kube } : {}), tunnel, log: log.child({ component: 'proxy' }), metrics
    })
  }
  const control = await m.startControlApi({ socketPath: config.controlSocket, tunnel, ...(catalog != null ? { catalog } : {}), ...(proxy != null ? { proxy } : {}), metrics, diagnostics: config.diagnostics, log })
  const metricsHttp = config.metrics != null
    ? await startHttp(parseHostPort(config.metrics), {
      'GET /metrics': async () => ({ type: metrics.registry.contentType, body: await metrics.registry.metrics() }),
      'GET /healthz': async () => ({ body: { status: 'ok' } })
    }, (err) => { log.warn({ err }, 'metrics request failed') }, { metrics })
    : undefined

  compactHeap() // start-up garbage (module loading, the first sync) is all dead now
  log.info({ peerId: tunnel.peerId.toString(), udp: config.listen.udpPort, tcp: config.listen.tcpPort, control: config.controlSocket, peers: directory.list().length, psk: psk != null, catalog: catalog?.snapshot().source ?? 'off', dns: config.dns?.listen ?? 'off', proxy: proxy != null ? proxy.status().backend : 'off' }, 'edgemesh-agent ready')
  return {
    tunnel,
    ...(catalog != null ? { catalog } : {}),
    stop: async () => {
      publisher?.stop()
      await proxy?.stop()
      staticPeers.stop()
      registry?.stop()
      await dns?.stop()
      await catalog?.stop()
      kube?.close()
      await stopHttp(control)
      if (metricsHttp != null) await stopHttp(metricsHttp)
      await tunnel.stop()
    }
  }
}

const USAGE = `usage: edgemesh-agent --config FILE [--set key.path=value ...] [--print-peer-id]
  --config FILE        YAML configuration (see README)
  --set a.b=value      override one field, e.g. --set nodeName=edge-1
  --print-peer-id      create the identity key if missing, print the peer id, exit
`

export async function main (argv: string[]): Promise<void> {
  const args = parseDaemonArgs(argv, USAGE)
  if (args.help) return
  const source = { ...(args.configFile != null ? { file: args.configFile } : {}), overrides: args.overrides }
  if (args.printPeerId) {
    const partial = await loadConfig(AgentConfig.pick({ identityFile: true }).loose(), source)
    const { loadOrCreateIdentity } = await import('../shared/identity.ts')
    process.stdout.write(`${(await loadOrCreateIdentity(partial.identityFile)).peerId.toString()}\n`)
    return
  }
  const config = await loadConfig(AgentConfig, source)
  const agent = await startAgent(config)
  const shutdown = (): void => { agent.stop().then(() => process.exit(0), () => process.exit(1)) }
  process.once('SIGTERM', shutdown)
  process.once('SIGINT', shutdown)
}
