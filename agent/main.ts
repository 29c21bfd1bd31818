// edgemesh-agent: the node agent's composition root. Today: catalog + peer registry (or a
// static peers file), node-local DNS, identity, tunnel, the ClusterIP proxy, local control API
// SOCKS5 and metrics.
import { rm } from 'node:fs/promises'
import { AgentConfig, AgentConfigFields, ConfigError, loadConfig, loadPsk } from '../shared/config.ts'
import { parseDaemonArgs, reportStacksAt } from '../shared/cli-main.ts'
import { deviceOwner, removeDevice } from '../shared/net-device.ts'
import { StopStack } from '../shared/stop-stack.ts'
import { startMemoryReclaim } from './memory-reclaim.ts'
import { createLogger } from '../shared/logging.ts'
import { Metrics } from '../shared/metrics.ts'
import type { Server } from 'node:http'
import { boundAddress, startHttp, stopHttp } from '../shared/http.ts'
import { parseHostPort } from '../shared/host-port.ts'
import { Catalog } from './catalog/catalog.ts'
import { HealthState, startHealthServer } from './health/server.ts'
import { KubeClient, loadKubeCredentials } from './catalog/kube-client.ts'
import type { Tunnel } from './tunnel/tunnel.ts'
import type { PeerDirectory } from './tunnel/directory.ts'
import type { CatalogPeerDirectory } from './catalog/peer-registry.ts'

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

  // The files the config names are read and checked before anything starts: a bad one is a
  // configuration error with nothing to undo.
  const creds = config.kubernetes != null ? await loadKubeCredentials(config.kubernetes.kubeconfig, config.kubernetes.apiServer) : undefined
  const psk = await loadPsk(config.pskFile)
  if (psk == null) log.warn('NO PRE-SHARED KEY: this agent\'s mesh is open to any key. Its relays let anyone register and learn agents\' addresses, and nothing but the peer directory keeps other keys out. Set pskFile to the mesh\'s swarm.key (the Helm chart creates one by default; see manifests/README.md, "Cluster membership (PSK)")')

  // Every part registers its stop as it starts; a part that fails to start unwinds the others
  // (and removes the device, rules and socket they created), and so does a normal stop.
  const parts = new StopStack((part, err) => { log.warn({ part, err: (err as Error)?.message ?? String(err) }, 'stop failed; stopping the rest') })
  let failed = false
  const health = new HealthState({ controlSocket: config.controlSocket })
  try {
    // first, so /readyz says why the agent is not ready yet (starting, catalog, DNS) from the start
    if (config.health != null) {
      const listen = parseHostPort(config.health)
      await parts.start('health', async () => await startHealthServer(listen, health, { metrics, onError: (err) => { log.warn({ err }, 'health request failed') } }), stopHttp)
    }
    if (config.dns != null) {
      const { host, port } = parseHostPort(config.dns.listen)
      health.dns = { host, port, name: HealthState.dnsProbeName(config.dns.clusterDomain) }
    }
    // With Kubernetes, peers come from the registry (static entries only fill gaps); without it
    // the peers file is the whole directory.
    let catalog: Catalog | undefined
    let kube: KubeClient | undefined
    if (config.kubernetes != null && creds != null) {
      const k = config.kubernetes
      const client = kube = new KubeClient({ ...creds, watchIdleMs: k.watchIdleSeconds * 1000 })
      parts.push('kubernetes', () => { client.close() })
      log.info({ apiServer: creds.server, auth: creds.cert != null ? 'client certificate' : 'token' }, 'using the Kubernetes API')
      const c = catalog = new Catalog({ client, namespace: k.namespace, snapshotFile: k.snapshotFile, persistIntervalMs: k.snapshotIntervalSeconds * 1000, syncTimeoutMs: k.syncTimeoutMs, log: log.child({ component: 'catalog' }), metrics, onBulkLoad: compactHeap })
      parts.push('catalog', async () => { await c.stop() }) // stop copes with a half-done start
      health.catalog = c
      health.starting = 'catalog'
      await parts.step('catalog', async () => { await c.start() })
    }
    // With the proxy on, DNS answers a ClusterIP Service's name only once the proxy has
    // programmed it (a client must never reach the ClusterIP before its rules): DNS follows a
    // view of the catalog the proxy's applied snapshots move (catalog/programmed-view.ts)
    let programmedView: import('./catalog/programmed-view.ts').ProgrammedView | undefined
    if (config.dns != null && config.proxy != null && catalog != null) {
      const [{ ProgrammedView }, { programsService }] = await Promise.all([import('./catalog/programmed-view.ts'), import('./proxy/plan.ts')])
      const view = programmedView = new ProgrammedView(catalog, programsService)
      parts.push('programmed view', () => { view.stop() })
    }
    // DNS needs only the catalog: it answers before the tunnel side is even loaded
    let dns: Awaited<ReturnType<typeof import('./dns/dns.ts').startDns>> | undefined
    if (config.dns != null) {
      const dnsConfig = config.dns
      const dnsCatalog = programmedView ?? catalog
      health.starting = 'dns'
      await parts.step('dns', async () => { await removeDeviceIfCreated(parts, dnsConfig.device) })
      dns = await parts.start('dns', async () => await (await import('./dns/dns.ts')).startDns({ config: dnsConfig, catalog: dnsCatalog, metrics, log: log.child({ component: 'dns' }) }), async (d) => { await d.stop() })
    }

    if (dns != null) health.dnsListening = true
    health.starting = 'tunnel'
    const m = await loadTunnelSide()
    const identity = await parts.step('identityFile', async () => await m.loadOrCreateIdentity(config.identityFile))
    if (identity.created) log.info({ keyFile: config.identityFile, peerId: identity.peerId.toString() }, 'generated a new node identity')
    const staticPeers = await parts.step('peersFile', async () => config.peersFile != null ? await m.StaticPeerDirectory.fromFile(config.peersFile) : new m.StaticPeerDirectory())
    staticPeers.watch(2_000, (err) => { log.warn({ err: (err as Error).message }, 'peers file reload failed; keeping the last good one') })
    parts.push('peersFile', () => { staticPeers.stop() })
    let registry: CatalogPeerDirectory | undefined
    if (catalog != null) {
      const r = registry = new m.CatalogPeerDirectory(catalog, log.child({ component: 'peers' }), staticPeers)
      parts.push('peers', () => { r.stop() })
    }
    const directory: PeerDirectory = registry ?? staticPeers

    // the home relay (relay-set.ts) is not published in the peer record: peers rank the relays
    // themselves and skip one that does not answer, while publishing it would make a relay
    // that fails with k agents homed on it cost k writes, each an event to every agent
    // (k x N: 33 million at 10,000 nodes and 3 relays; README "How it scales")
    const tunnel = await parts.start('tunnel', async () => await m.Tunnel.start({
      nodeName: config.nodeName, privateKey: identity.privateKey, config, directory,
      ...(psk != null ? { psk } : {}), log: log.child({ component: 'tunnel' }), metrics
    }), async (t) => { await t.stop() })
    if (config.diagnostics) await parts.step('diagnostics', async () => { await m.registerDiagnostics(tunnel) })
    if (kube != null && config.kubernetes != null) {
      const publisher = new m.LeasePublisher({
        client: kube, namespace: config.kubernetes.namespace, nodeName: config.nodeName, peerId: tunnel.peerId.toString(),
        addresses: m.localTcpAddresses(config.listen.tcpPort, config.tunnel.advertise), leaseDurationSeconds: config.kubernetes.leaseDurationSeconds,
        log: log.child({ component: 'peers' }), metrics, ...(catalog != null ? { catalog } : {})
      })
      publisher.start()
      parts.push('peer record', () => { publisher.stop() })
    }
    let proxy: import('./proxy/proxy.ts').ServiceProxy | undefined
    if (config.proxy != null) {
      const proxyConfig = config.proxy
      // AgentConfig refuses proxy without kubernetes; this is for callers that built a config by hand
      if (catalog == null) throw new ConfigError('proxy: needs kubernetes (the proxy learns Services and endpoints from the Kubernetes API)')
      const proxyCatalog = catalog
      const view = programmedView
      health.starting = 'proxy'
      await parts.step('proxy', async () => { await removeDeviceIfCreated(parts, proxyConfig.device) })
      proxy = await parts.start('proxy', async () => {
        const { ServiceProxy } = await import('./proxy/proxy.ts')
        view?.gate() // from here, new ClusterIP names wait for the proxy's rules
        return await ServiceProxy.start({
          config: proxyConfig, nodeName: config.nodeName, clusterDomain: config.dns?.clusterDomain ?? 'cluster.local',
          catalog: proxyCatalog, ...(kube != null ? { kube } : {}), tunnel, log: log.child({ component: 'proxy' }), metrics,
          ...(view != null ? { onProgrammed: (snapshot: import('./catalog/store.ts').CatalogSnapshot) => { view.programmed(snapshot) } } : {})
        })
      }, async (p) => { await p.stop(failed ? { removeRules: true } : {}) }) // a failed start-up leaves no rules whatever cleanupOnExit says
    }
    let socks5: Awaited<ReturnType<typeof import('./socks5/socks5.ts').startSocks5>> | undefined
    if (config.socks5 != null) {
      const socksConfig = config.socks5
      if (socksConfig.enabled) await parts.step('socks5', async () => { await removeDeviceIfCreated(parts, socksConfig.device) })
      socks5 = await parts.start('socks5', async () => await (await import('./socks5/socks5.ts')).startSocks5({
        config: socksConfig, nodeName: config.nodeName, clusterDomain: config.dns?.clusterDomain ?? 'cluster.local', directCidrs: config.proxy?.directCidrs ?? [],
        tunnel, directory, ...(catalog != null ? { catalog } : {}), ...(kube != null ? { nodes: new (await import('./catalog/node-lookup.ts')).KubeNodeLookup({ client: kube }) } : {}), log: log.child({ component: 'socks5' }), metrics
      }), async (s) => { await s.stop() })
    }
    health.starting = 'control socket'
    const controlProxy = proxy
    await parts.start('controlSocket', async () => await m.startControlApi({ socketPath: config.controlSocket, tunnel, ...(catalog != null ? { catalog } : {}), ...(controlProxy != null ? { proxy: controlProxy } : {}), metrics, diagnostics: config.diagnostics, log }),
      async (server) => { await stopHttp(server); await rm(config.controlSocket, { force: true }) })
    const metricsAddress = config.metrics
    let metricsServer: Server | undefined
    if (metricsAddress != null) {
      metricsServer = await parts.start('metrics', async () => await startHttp(parseHostPort(metricsAddress), {
        'GET /metrics': async () => ({ type: metrics.registry.contentType, body: await metrics.registry.metrics() }),
        'GET /healthz': async () => ({ body: { status: 'ok' } })
      }, (err) => { log.warn({ err }, 'metrics request failed') }, { metrics }), stopHttp)
    }

    health.starting = undefined
    compactHeap() // start-up garbage (module loading, the first sync) is all dead now
    const reclaim = startMemoryReclaim() // traffic's buffers go back to the OS once it has passed (memory-reclaim.ts)
    parts.push('memory reclaim', () => { reclaim.stop() })
    log.info({ peerId: tunnel.peerId.toString(), udp: config.listen.udpPort, tcp: config.listen.tcpPort, control: config.controlSocket, metrics: metricsServer != null ? boundAddress(metricsServer) : 'off', health: config.health ?? 'off', peers: directory.list().length, psk: psk != null, catalog: catalog?.snapshot().source ?? 'off', dns: dns != null ? config.dns?.listen : 'off', proxy: proxy != null ? proxy.status().backend : 'off', socks5: socks5?.server?.addresses ?? 'off' }, 'edgemesh-agent ready')
    return {
      tunnel,
      ...(catalog != null ? { catalog } : {}),
      stop: async () => { await parts.unwind() }
    }
  } catch (err) {
    failed = true
    log.error({ err: (err as Error)?.message ?? String(err) }, 'start-up failed; stopping what started')
    await parts.unwind()
    throw err
  }
}

/**
 * Registers the removal of `device` when it does not exist yet (the part about to start creates
 * it) or an earlier agent created it (a crash or a kill left it behind): it goes when that part
 * has stopped. A device someone else made stays.
 */
async function removeDeviceIfCreated (parts: StopStack, device: string): Promise<void> {
  if (device === '' || await deviceOwner(device) === 'other') return
  parts.push(`device ${device}`, async () => { await removeDevice(device) })
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
    const partial = await loadConfig(AgentConfigFields.pick({ identityFile: true }).loose(), source)
    const { loadOrCreateIdentity } = await import('../shared/identity.ts')
    process.stdout.write(`${(await loadOrCreateIdentity(partial.identityFile)).peerId.toString()}\n`)
    return
  }
  const config = await loadConfig(AgentConfig, source)
  reportStacksAt(config.logLevel)
  // a signal during start-up must not kill the agent halfway (the bridge would stay behind): it
  // stops the agent as soon as the start-up has finished (or unwound)
  let signalled = false
  const duringStart = (): void => { signalled = true }
  process.once('SIGTERM', duringStart)
  process.once('SIGINT', duringStart)
  const agent = await startAgent(config)
  process.off('SIGTERM', duringStart)
  process.off('SIGINT', duringStart)
  const shutdown = (): void => { agent.stop().then(() => process.exit(0), () => process.exit(1)) }
  if (signalled) { shutdown(); return }
  process.once('SIGTERM', shutdown)
  process.once('SIGINT', shutdown)
}
