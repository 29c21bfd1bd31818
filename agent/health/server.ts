// The agent's probe listener: GET /healthz (live) and GET /readyz (ready) over plain HTTP, for the
// kubelet's httpGet probes. It starts before anything else, so /readyz tells why the agent is not
// ready yet (starting, catalog, DNS) from the first second; the verdicts are in readiness.ts.
// A probe costs the agent one HTTP request, plus one DNS query to itself and one control-socket
// request, instead of a whole Node process per probe (the `edgemesh status` exec probe).
import { request } from 'node:http'
import type { Server } from 'node:http'
import { startHttp, type HttpListen, type Route, type RouteResult } from '../../shared/http.ts'
import type { Metrics } from '../../shared/metrics.ts'
import { probeDns } from './dns-probe.ts'
import { liveness, rcodeName, readiness, type CatalogSource, type DnsProbeResult, type HealthFacts } from './readiness.ts'

/** What the agent's start-up fills in as its parts come up. */
export class HealthState {
  /** the start-up step in progress; undefined once start-up has finished */
  starting: string | undefined = 'start-up'
  catalog: { readonly synced: boolean, snapshot: () => { source: CatalogSource } } | undefined
  /** DNS configured: the address it listens on and the name /readyz asks it */
  dns: { host: string, port: number, name: string } | undefined
  dnsListening = false
  readonly controlSocket: string
  /** per check: a DNS query, a control-socket request */
  readonly timeoutMs: number

  constructor (opts: { controlSocket: string, timeoutMs?: number }) {
    this.controlSocket = opts.controlSocket
    this.timeoutMs = opts.timeoutMs ?? 1_000
  }

  /** The name /readyz asks the DNS server: a Service every cluster has, from the catalog. */
  static dnsProbeName (clusterDomain: string): string { return `kubernetes.default.svc.${clusterDomain}` }
}

async function controlSocketAnswers (socketPath: string, timeoutMs: number): Promise<{ ok: true } | { ok: false, error: string }> {
  return await new Promise((resolve) => {
    // a fresh connection each time (agent: false): the socket must still accept, not just a kept-alive one answer
    const req = request({ socketPath, path: '/healthz', method: 'GET', timeout: timeoutMs, agent: false }, (res) => {
      res.resume()
      resolve(res.statusCode === 200 ? { ok: true } : { ok: false, error: `HTTP ${res.statusCode ?? '?'}` })
    })
    req.on('timeout', () => { req.destroy(new Error(`no answer within ${timeoutMs} ms`)) })
    req.on('error', (err: NodeJS.ErrnoException) => { resolve({ ok: false, error: err.code ?? err.message }) })
    req.end()
  })
}

function describeDns (r: DnsProbeResult | 'not-listening'): string {
  if (r === 'not-listening') return 'not listening'
  return 'error' in r ? r.error : `${rcodeName(r.rcode)}, ${r.answers} answer(s)`
}

/**
 * Runs check once for every caller that arrives while it is running: a flood of probe requests
 * costs one DNS query and one control-socket request at a time, not one per request.
 */
function coalesced<T> (check: () => Promise<T>): () => Promise<T> {
  let running: Promise<T> | undefined
  return async () => await (running ??= check().finally(() => { running = undefined }))
}

/** /healthz and /readyz, for the probe listener (and any other listener that wants them). */
export function healthRoutes (state: HealthState): Record<string, Route> {
  const live = coalesced(async (): Promise<RouteResult> => {
    const facts: Pick<HealthFacts, 'starting' | 'controlSocket'> = { starting: state.starting }
    if (state.starting == null) facts.controlSocket = await controlSocketAnswers(state.controlSocket, state.timeoutMs)
    const v = liveness(facts)
    return { status: v.ok ? 200 : 503, body: { live: v.ok, reasons: v.reasons } }
  })
  const ready = coalesced(async (): Promise<RouteResult> => {
    const facts: HealthFacts = { starting: state.starting }
    const catalog = state.catalog
    if (catalog != null) facts.catalog = { synced: catalog.synced, source: catalog.snapshot().source }
    const dns = state.dns
    if (dns != null) facts.dns = { name: dns.name, result: state.dnsListening ? await probeDns(dns, dns.name, state.timeoutMs) : 'not-listening' }
    const v = readiness(facts)
    return {
      status: v.ok ? 200 : 503,
      body: {
        ready: v.ok,
        reasons: v.reasons,
        ...(facts.starting != null ? { starting: facts.starting } : {}),
        ...(facts.catalog != null ? { catalog: facts.catalog } : {}),
        ...(facts.dns != null ? { dns: { name: facts.dns.name, answer: describeDns(facts.dns.result) } } : {})
      }
    }
  })
  return { 'GET /healthz': live, 'GET /readyz': ready }
}

export async function startHealthServer (listen: HttpListen, state: HealthState, opts: { metrics: Metrics, onError: (err: unknown) => void }): Promise<Server> {
  return await startHttp(listen, healthRoutes(state), opts.onError, { metrics: opts.metrics })
}
