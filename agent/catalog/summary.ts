// What `edgemesh catalog` and the control API show about the catalog.
import type { Catalog } from './catalog.ts'
import { countEndpoints } from './store.ts'

export function catalogSummary (catalog: Catalog, full: boolean): object {
  const snap = catalog.snapshot()
  const { slices, endpoints } = countEndpoints(snap)
  const now = Date.now()
  const summary: Record<string, unknown> = {
    synced: catalog.synced,
    source: snap.source,
    version: snap.version,
    syncedAfterMs: catalog.syncedAfterMs === undefined ? null : Math.round(catalog.syncedAfterMs),
    counts: { services: snap.services.size, endpointSlices: slices, endpoints, peers: snap.peers.size },
    // records are written only when their content changes: the age says when, not whether the
    // peer is up (the tunnel's status says that)
    peers: [...snap.peers.values()].map((p) => ({ node: p.nodeName, peerId: p.peerId, ...(p.homeRelay != null ? { homeRelay: p.homeRelay } : {}), writtenSecondsAgo: (p.writtenAt ?? 0) === 0 ? null : Math.round((now - p.writtenAt) / 1000) }))
  }
  if (full) {
    summary.services = Object.fromEntries([...snap.services].map(([k, s]) => [k, { type: s.type, clusterIPs: s.clusterIPs, ports: s.ports.map((p) => `${p.name === '' ? '' : p.name + ':'}${p.port}/${p.protocol}`) }]))
    summary.endpoints = Object.fromEntries([...snap.endpoints].map(([k, bySlice]) => [k, [...bySlice.values()].flatMap((s) => s.endpoints.map((e) => `${e.addresses.join(',')}${e.ready ? '' : ' (not ready)'}${e.nodeName != null ? ' @' + e.nodeName : ''}`)).sort()]))
  }
  return summary
}
