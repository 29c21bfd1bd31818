// edgemesh-agent: the node agent's composition root. Today: identity, peer directory, tunnel,
// local control API and metrics. DNS, proxy and SOCKS5 plug in here as they arrive.
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

export interface RunningAgent { tunnel: Tunnel, stop: () => Promise<void> }

export async function startAgent (config: AgentConfig): Promise<RunningAgent> {
  const log = createLogger({ name: 'edgemesh-agent', level: config.logLevel }).child({ node: config.nodeName })
  const metrics = new Metrics()
  const identity = await loadOrCreateIdentity(config.identityFile)
  if (identity.created) log.info({ keyFile: config.identityFile, peerId: identity.peerId.toString() }, 'generated a new node identity')
  const psk = await loadPsk(config.pskFile)
  const directory = config.peersFile != null ? await StaticPeerDirectory.fromFile(config.peersFile) : new StaticPeerDirectory()
  directory.watch(2_000, (err) => { log.warn({ err: (err as Error).message }, 'peers file reload failed; keeping the last good one') })

  const tunnel = await Tunnel.start({
    nodeName: config.nodeName, privateKey: identity.privateKey, config, directory,
    ...(psk != null ? { psk } : {}), log: log.child({ component: 'tunnel' }), metrics
  })
  if (config.diagnostics) await registerDiagnostics(tunnel)
  const control = await startControlApi({ socketPath: config.controlSocket, tunnel, metrics, diagnostics: config.diagnostics, log })
  const metricsHttp = config.metrics != null
    ? await startHttp(parseHostPort(config.metrics), {
      'GET /metrics': async () => ({ type: metrics.registry.contentType, body: await metrics.registry.metrics() }),
      'GET /healthz': async () => ({ body: { status: 'ok' } })
    }, () => {})
    : undefined

  log.info({ peerId: tunnel.peerId.toString(), udp: config.listen.udpPort, tcp: config.listen.tcpPort, control: config.controlSocket, peers: directory.list().length, psk: psk != null }, 'edgemesh-agent ready')
  return {
    tunnel,
    stop: async () => {
      directory.stop()
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
