// Helper of bench:proxy, run inside a throwaway lab namespace (`ip netns exec`): the real
// ServiceProxy (dist/, as the agent runs it) over a synthetic catalog snapshot of N ClusterIP
// Services x E ready endpoints, all on this node (kernel DNAT only: no listener, no tunnel), and
// the floor it is compared with: the restore command alone applying the very text the proxy's
// full sync applied. Both run on a table that already holds the rules (a full resync), rounds
// alternate (and swap order each round) so machine noise lands on both; the medians are compared.
// Also times the sync's stages on their own (plan, rule generation, the hook listing) for the
// breakdown. Prints one JSON line (last line).
//   node test/bench/proxy-iptables.mjs <services> <endpointsPerService> <rounds>
import { AgentConfig } from '../../dist/shared/config.js'
import { CatalogStore } from '../../dist/agent/catalog/store.js'
import { createLogger } from '../../dist/shared/logging.js'
import { Metrics } from '../../dist/shared/metrics.js'
import { ServiceProxy } from '../../dist/agent/proxy/proxy.js'
import { planAll } from '../../dist/agent/proxy/plan.js'
import { buildSyncRules } from '../../dist/agent/proxy/rules.js'

const [services, endpoints, rounds] = process.argv.slice(2).map(Number)
if (!(services > 0 && endpoints > 0 && rounds > 0)) throw new Error('usage: proxy-iptables.mjs <services> <endpointsPerService> <rounds>')
const NODE = 'edge-bench'
const log = (s) => { process.stderr.write(`[proxy-iptables] ${s}\n`) }
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }
const r1 = (v) => Math.round(v * 10) / 10

// ---- the catalog: N Services in 20 namespaces, ClusterIPs spread over every low byte ----
const store = new CatalogStore()
store.setSource('api')
for (let i = 0; i < services; i++) {
  const namespace = `ns-${i % 20}`
  const name = `svc-${i}`
  const clusterIP = `10.96.${(i >> 8) & 255}.${i & 255}`
  store.upsert('services', {
    namespace, name, resourceVersion: '1', type: 'ClusterIP', clusterIPs: [clusterIP], headless: false,
    ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }], sessionAffinity: 'None', affinityTimeoutSeconds: 10_800, publishNotReadyAddresses: false
  })
  store.upsert('endpointSlices', {
    namespace, name: `${name}-1`, resourceVersion: '1', serviceName: name, addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: Array.from({ length: endpoints }, (_, e) => {
      const n = i * endpoints + e
      return { addresses: [`10.${128 + ((n >> 16) & 63)}.${(n >> 8) & 255}.${n & 255}`], ready: true, serving: true, terminating: false, nodeName: NODE }
    })
  })
}
const snapshot = store.commit().snapshot
const catalog = { snapshot: () => snapshot, subscribe: () => () => {} }
const tunnel = {
  handle: async () => {},
  openStream: async () => { throw new Error('bench: no tunnel (every endpoint is local)') }
}
// the agent's defaults; device '' (no listener is ever needed: every endpoint is on this node)
const config = { ...AgentConfig.shape.proxy.unwrap().parse({}), device: '', listen: '127.0.0.1', resyncSeconds: 3600 }

const t0 = performance.now()
const proxy = await ServiceProxy.start({ config, nodeName: NODE, clusterDomain: 'cluster.local', catalog, tunnel, log: createLogger({ name: 'bench', level: 'warn' }), metrics: new Metrics() })
const startMs = performance.now() - t0
const p = proxy // private fields are reached at run time: fullPending, ipt, lastSync, existingChains
const first = p.lastSync
log(`proxy started in ${startMs.toFixed(0)} ms (first sync ${JSON.stringify(first)})`)
try {
  // the text the proxy restores, captured on its way to the kernel (one assignment per sync)
  const ipt = p.ipt
  const restore = ipt.restore.bind(ipt)
  let lastText = ''
  ipt.restore = async (text) => { lastText = text; await restore(text) }

  const fullSync = async () => {
    p.fullPending = true
    const t = performance.now()
    await proxy.runSync()
    const wallMs = performance.now() - t
    const report = p.lastSync
    if (report?.kind !== 'full') throw new Error(`expected a full sync, got ${JSON.stringify(report)}`)
    return { wallMs, report }
  }
  // one untimed full resync: every later sync (and the floor) applies the same text over the same table
  await fullSync()
  const text = lastText
  if (text === '' || !text.includes('COMMIT')) throw new Error('no restore text captured')
  const floor = async () => { const t = performance.now(); await restore(text); return performance.now() - t }

  const floorMs = []; const syncMs = []; const reportMs = []; const syncRestoreMs = []
  for (let r = 0; r < rounds; r++) {
    const runFloor = async () => { floorMs.push(await floor()) }
    const runSync = async () => { const s = await fullSync(); syncMs.push(s.wallMs); reportMs.push(s.report.ms); syncRestoreMs.push(s.report.restoreMs) }
    if (r % 2 === 0) { await runFloor(); await runSync() } else { await runSync(); await runFloor() }
    log(`round ${r + 1}/${rounds}: restore alone ${floorMs.at(-1).toFixed(0)} ms, full sync ${syncMs.at(-1).toFixed(0)} ms (its restore ${syncRestoreMs.at(-1).toFixed(0)} ms)`)
  }
  if (lastText !== text) throw new Error('the proxy restored different text in later syncs')

  // the sync's stages on their own, in this process (warm, like the resyncs above)
  const planMs = []; const buildMs = []; const listMs = []
  const planOpts = { nodeName: NODE, directCidrs: [], clusterDomain: 'cluster.local', destinationRules: [] }
  for (let r = 0; r < rounds; r++) {
    let t = performance.now()
    const { ports } = planAll(snapshot, planOpts)
    planMs.push(performance.now() - t)
    const input = ports.map((pl) => ({ key: pl.key, clusterIP: pl.clusterIP, port: pl.port, protocol: pl.protocol, direct: pl.direct, agentSlots: 0, balance: 'round-robin', affinitySeconds: pl.affinitySeconds }))
    t = performance.now()
    const built = buildSyncRules(input, { chainPrefix: config.chainPrefix, existing: { nat: p.existingChains, filter: p.existingFilterChains } })
    buildMs.push(performance.now() - t)
    if (built.text !== text) log('note: the standalone build differs from the text the proxy applied')
    t = performance.now()
    await Promise.all(['PREROUTING', 'OUTPUT', 'POSTROUTING'].map((c) => ipt.listChain(c)))
    listMs.push(performance.now() - t)
  }
  const rules = text.split('\n').filter((l) => l.startsWith('-A ')).length
  const chains = text.split('\n').filter((l) => l.startsWith(':')).length
  process.stdout.write(JSON.stringify({
    services, endpoints, backend: ipt.backend, rules, chains, bytes: text.length,
    start_ms: r1(startMs), first_sync: first,
    restore_ms: r1(median(floorMs)), sync_ms: r1(median(syncMs)), sync_report_ms: r1(median(reportMs)), sync_restore_ms: r1(median(syncRestoreMs)),
    plan_ms: r1(median(planMs)), build_ms: r1(median(buildMs)), list_hooks_ms: r1(median(listMs)),
    samples: { restore: floorMs.map(r1), sync: syncMs.map(r1), sync_restore: syncRestoreMs.map(r1) }
  }) + '\n')
} finally {
  await proxy.stop() // removes the rules (cleanupOnExit)
  const left = await p.ipt.save()
  if (left.includes(`${config.chainPrefix}-`)) log('WARNING: rules left after stop')
}
