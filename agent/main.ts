// edgemesh-agent: the node agent's composition root. Today: identity, catalog + peer registry
// (or a static peers file), tunnel, local control API and metrics. DNS, proxy and SOCKS5 plug in here as they arrive.
import { AgentConfig, loadConfig, loadPsk } from '../shared/config.ts'
import { loadOrCreateIdentity } from '../shared/identity.ts'
import { parseDaemonArgs } from '../shared/cli-main.ts'
import { createLogger } from '../shared/logging.ts'
import { Metrics } from '../shared/metrics.ts'
import { parseHostPort, startHttp, stopHttp } from '../shared/http.ts'
import { StaticPeerDirectory } from './tunnel/directory.ts'
import { Tunnel } from './tunnel/tunnel.ts'
import { registerDiagnostics } from './tunnel/diagnostics.ts'
import { startControlApi } from './control/api.ts'
import { Catalog } from './catalog/catalog.ts'
import { KubeClient, loadKubeCredentials } from './catalog/kube-client.ts'
import { CatalogPeerDirectory, LeasePublisher, localTcpAddresses } from './catalog/peer-registry.ts'
import type { PeerDirectory } from './tunnel/directory.ts'

export interface RunningAgent { tunnel: Tunnel, catalog?: Catalog, stop: () => Promise<void> }

export async function startAgent (config: AgentConfig): Promise<RunningAgent> {
  const log = createLogger({ name: 'edgemesh-agent', level: config.logLevel }).child({ node: config.nodeName })
  const metrics = new Metrics()
  const identity = await loadOrCreateIdentity(config.identityFile)
  if (identity.created) log.info({ keyFile: config.identityFile, peerId: identity.peerId.toString() }, 'generated a new node identity')
  const psk = await loadPsk(config.pskFile)
  const staticPeers = config.peersFile != null ? await StaticPeerDirectory.fromFile(config.peersFile) : new StaticPeerDirectory()
  staticPeers.watch(2_000, (err) => { log.warn({ err: (err as Error).message }, 'peers file reload failed; keeping the last good one') })

  // With Kubernetes, peers come from the registry (static entries only fill gaps); without it
  // the peers file is the whole directory.
  let catalog: Catalog | undefined
  let kube: KubeClient | undefined
  let directory: PeerDirectory = staticPeers
  if (config.kubernetes != null) {
    const k = config.kubernetes
    const creds = await loadKubeCredentials(k.kubeconfig, k.apiServer)
    kube = new KubeClient({ ...creds, watchIdleMs: k.watchIdleSeconds * 1000 })
    log.info({ apiServer: creds.server, auth: creds.cert != null ? 'client certificate' : 'token' }, 'using the Kubernetes API')
    catalog = new Catalog({ client: kube, namespace: k.namespace, snapshotFile: k.snapshotFile, syncTimeoutMs: k.syncTimeoutMs, log: log.child({ component: 'catalog' }), metrics })
    await catalog.start()
    directory = new CatalogPeerDirectory(catalog, log.child({ component: 'peers' }), staticPeers)
  }

  const tunnel = await Tunnel.start({
    nodeName: config.nodeName, privateKey: identity.privateKey, config, directory,
    ...(psk != null ? { psk } : {}), log: log.child({ component: 'tunnel' }), metrics
  })
  if (config.diagnostics) await registerDiagnostics(tunnel)
  let publisher: LeasePublisher | undefined
  if (kube != null && config.kubernetes != null) {
    publisher = new LeasePublisher({
      client: kube, namespace: config.kubernetes.namespace, nodeName: config.nodeName, peerId: tunnel.peerId.toString(),
      addresses: localTcpAddresses(config.listen.tcpPort, config.tunnel.advertise), leaseDurationSeconds: config.kubernetes.leaseDurationSeconds,
      log: log.child({ component: 'peers' })
    })
    publisher.start()
  }
  const control = await startControlApi({ socketPath: config.controlSocket, tunnel, ...(catalog != null ? { catalog } : {}), metrics, diagnostics: config.diagnostics, log })
  const metricsHttp = config.metrics != null
    ? await startHttp(parseHostPort(config.metrics), {
      'GET /metrics': async () => ({ type: metrics.registry.contentType, body: await metrics.registry.metrics() }),
      'GET /healthz': async () => ({ body: { status: 'ok' } })
    }, () => {})
    : undefined

  log.info({ peerId: tunnel.peerId.toString(), udp: config.listen.udpPort, tcp: config.listen.tcpPort, control: config.controlSocket, peers: directory.list().length, psk: psk != null, catalog: catalog?.snapshot().source ?? 'off' }, 'edgemesh-agent ready')
  return {
    tunnel,
    ...(catalog != null ? { catalog } : {}),
    stop: async () => {
      publisher?.stop()
      staticPeers.stop()
      if (directory instanceof CatalogPeerDirectory) directory.stop()
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
    process.stdout.write(`${(await loadOrCreateIdentity(partial.identityFile)).peerId.toString()}\n`)
    return
  }
  const config = await loadConfig(AgentConfig, source)
  const agent = await startAgent(config)
  const shutdown = (): void => { agent.stop().then(() => process.exit(0), () => process.exit(1)) }
  process.once('SIGTERM', shutdown)
  process.once('SIGINT', shutdown)
}
