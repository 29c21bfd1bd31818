// edgemesh-agent: the node agent's composition root. Today: identity, peer directory, tunnel,
// local control API and metrics. DNS, proxy and SOCKS5 plug in here as they arrive.
import { parseArgs } from 'node:util'
import { AgentConfig, ConfigError, loadConfig, loadPsk } from '../shared/config.ts'
import { loadOrCreateIdentity } from '../shared/identity.ts'
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

export async function main (argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      set: { type: 'string', multiple: true },
      'print-peer-id': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' }
    }
  })
  if (values.help === true) {
    process.stdout.write(`usage: edgemesh-agent --config FILE [--set key.path=value ...] [--print-peer-id]
  --config FILE        YAML configuration (see README)
  --set a.b=value      override one field, e.g. --set nodeName=edge-1
  --print-peer-id      create the identity key if missing, print the peer id, exit
`)
    return
  }
  const overrides = (values.set ?? []).map((kv): [string, string] => {
    const i = kv.indexOf('=')
    if (i < 1) throw new ConfigError(`--set ${kv}: expected key.path=value`)
    return [kv.slice(0, i), kv.slice(i + 1)]
  })
  if (values['print-peer-id'] === true) {
    const partial = await loadConfig(AgentConfig.pick({ identityFile: true }).loose(), { ...(values.config != null ? { file: values.config } : {}), overrides })
    process.stdout.write(`${(await loadOrCreateIdentity(partial.identityFile)).peerId.toString()}\n`)
    return
  }
  const config = await loadConfig(AgentConfig, { ...(values.config != null ? { file: values.config } : {}), overrides })
  const agent = await startAgent(config)
  const shutdown = (): void => { agent.stop().then(() => process.exit(0), () => process.exit(1)) }
  process.once('SIGTERM', shutdown)
  process.once('SIGINT', shutdown)
}
