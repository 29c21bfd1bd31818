// What /healthz (live) and /readyz (ready) answer, from facts the probe listener gathered. Pure.
//
// Live: the event loop answers (this code runs at all) and, once started, the control socket
// answers. Nothing that depends on the network: an apiserver or relay out of reach at the edge
// must never get an agent restarted.
// Ready: start-up finished; the catalog has something real to serve, synced from the API or
// loaded from the disk snapshot (an agent restarted while its node is cut off from the
// apiserver serves what it last knew: ready; one that never synced and has no snapshot: not
// ready); and the node-local DNS server answers a query to its own address from its own zone.
// In Kubernetes mode the query is for kubernetes.default.svc.<clusterDomain>, a Service every
// cluster has: NOERROR (the name exists; with the proxy on, only once its rules are in) is ready,
// NXDOMAIN is not (the catalog has not reached DNS). Without a catalog the zone is empty and any
// answer from it (NXDOMAIN) will do.

export type CatalogSource = 'api' | 'disk' | 'empty'

/** One query to the agent's own DNS listener: its rcode and answer count, or why there was none. */
export type DnsProbeResult = { rcode: number, answers: number } | { error: string }

export interface HealthFacts {
  /** the start-up step in progress; undefined once start-up has finished */
  starting: string | undefined
  /** absent: no catalog (standalone mode) */
  catalog?: { synced: boolean, source: CatalogSource }
  /** absent: DNS is off; 'not-listening': configured but not started yet */
  dns?: { name: string, result: DnsProbeResult | 'not-listening' }
  /** the control socket's answer to GET /healthz; absent before start-up has finished */
  controlSocket?: { ok: true } | { ok: false, error: string }
}

export interface HealthVerdict {
  ok: boolean
  /** why not, one line each (empty when ok) */
  reasons: string[]
}

const RCODE_NAMES: Record<number, string> = { 0: 'NOERROR', 1: 'FORMERR', 2: 'SERVFAIL', 3: 'NXDOMAIN', 4: 'NOTIMP', 5: 'REFUSED' }
export const rcodeName = (rcode: number): string => RCODE_NAMES[rcode] ?? `rcode ${rcode}`

export function liveness (facts: Pick<HealthFacts, 'starting' | 'controlSocket'>): HealthVerdict {
  if (facts.starting != null) return { ok: false, reasons: [`starting: ${facts.starting}`] }
  const c = facts.controlSocket
  if (c == null) return { ok: false, reasons: ['control socket: not checked'] }
  return c.ok ? { ok: true, reasons: [] } : { ok: false, reasons: [`control socket: ${c.error}`] }
}

export function readiness (facts: HealthFacts): HealthVerdict {
  const reasons: string[] = []
  if (facts.starting != null) reasons.push(`starting: ${facts.starting}`)
  const cat = facts.catalog
  if (cat != null && !cat.synced && cat.source !== 'disk') {
    reasons.push('catalog: not synced from the Kubernetes API yet, and no snapshot on disk to serve')
  }
  const dns = facts.dns
  if (dns != null) {
    const r = dns.result
    if (r === 'not-listening') reasons.push('dns: not listening yet')
    else if ('error' in r) reasons.push(`dns: ${dns.name}: ${r.error}`)
    else if (r.rcode === 3 && cat != null) reasons.push(`dns: ${dns.name}: NXDOMAIN (the catalog has not reached DNS yet)`)
    else if (r.rcode !== 0 && r.rcode !== 3) reasons.push(`dns: ${dns.name}: ${rcodeName(r.rcode)}`)
  }
  return { ok: reasons.length === 0, reasons }
}
