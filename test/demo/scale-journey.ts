// The demo's scale journey (its own control plane and relay on loopback, no lab): 60 simulated
// agents (test/scale/: the agent's own Catalog, LeasePublisher, RendezvousClient and circuit
// reservation, each with its own Node and pod-bound token) against a real kube-apiserver and a
// real edgemesh-server; then a quiet window in which nothing changes: every agent registered at
// the relay, two random agents introduced to each other, the mesh's Lease writes (0), peer watch
// events per agent per second (~0) and the relay's RSS per agent above its idle size.
import { ScaleEnv, procUsage, sumSamples, type FleetAgent } from '../scale/fleet.ts'
import { apiRequest } from '../controlplane/cluster.ts'
import { eventually, sleep } from '../lab/wait.ts'

const N = 60
const QUIET_S = 15
/** Lease writes in apiserver_request_total, as test/bench/scale.ts reads them */
const LEASE_WRITES = { resource: 'leases', verb: /^(POST|PUT|PATCH|DELETE|CREATE|UPDATE|APPLY)$/ }
const MESH_NAMESPACE = 'edgemesh'

/**
 * Every Lease that changed during the next `seconds` (a watch from the current resourceVersion
 * that the apiserver ends itself), counted by namespace: the apiserver renews its own identity
 * Lease in kube-system, which apiserver_request_total counts too; the mesh's are in edgemesh.
 */
async function leaseChanges (env: ScaleEnv, seconds: number): Promise<Record<string, number>> {
  const list = await apiRequest(env.cp, env.cp.adminToken, 'GET', '/apis/coordination.k8s.io/v1/leases?limit=1')
  if (list.status !== 200) throw new Error(`list leases: ${list.status}`)
  const rv = list.body.metadata.resourceVersion as string
  const watch = await apiRequest(env.cp, env.cp.adminToken, 'GET', `/apis/coordination.k8s.io/v1/leases?watch=1&resourceVersion=${rv}&timeoutSeconds=${seconds}`)
  if (watch.status !== 200) throw new Error(`watch leases: ${watch.status}`)
  const byNamespace: Record<string, number> = {}
  for (const line of watch.text.split('\n')) {
    if (line.trim() === '') continue
    const ev = JSON.parse(line)
    if (ev.type === 'BOOKMARK') continue
    const ns = ev.object?.metadata?.namespace ?? '?'
    byNamespace[ns] = (byNamespace[ns] ?? 0) + 1
  }
  return byNamespace
}

export async function scaleJourney (say: (s: string) => void): Promise<{ detail: string, ok: boolean }> {
  let env: ScaleEnv | undefined
  const t0 = Date.now()
  try {
    env = await ScaleEnv.start({ workers: 2 })
    const e = env
    const relayPid = e.relay.proc.pid
    // the relay sits idle while the tokens are minted: its idle size is read after that
    await e.mintTokens(N)
    const idleRss = (await procUsage(relayPid)).rssBytes
    await e.grow(N)
    const ready = await eventually(async () => {
      const s = await e.stats()
      if (s.registered < N || s.reserved < N || s.synced < N || s.minPeers < N) throw new Error(`registered ${s.registered}, reserved ${s.reserved}, synced ${s.synced}, fewest peers seen ${s.minPeers} of ${N}`)
      return s
    }, 30_000, 250)
    say(`  ${N} simulated agents (2 worker processes) registered, reserved and synced ${Date.now() - t0} ms after the control plane started; ${QUIET_S} s with nothing changing`)

    const a0 = await e.apiserverMetrics(); const s0 = await e.stats()
    const w0 = performance.now()
    const [changes] = await Promise.all([leaseChanges(e, QUIET_S), sleep(QUIET_S * 1000)])
    const a1 = await e.apiserverMetrics(); const s1 = await e.stats(); const rss = (await procUsage(relayPid)).rssBytes
    const secs = (performance.now() - w0) / 1000

    const leaseWrites = sumSamples(a1, 'apiserver_request_total', LEASE_WRITES) - sumSamples(a0, 'apiserver_request_total', LEASE_WRITES)
    const apiserverOwn = Object.entries(changes).filter(([ns]) => ns !== MESH_NAMESPACE).reduce((a, [, v]) => a + v, 0)
    const meshWrites = leaseWrites - apiserverOwn
    const meshLeaseChanges = changes[MESH_NAMESPACE] ?? 0
    const agentWrites = s1.kubeWrites - s0.kubeWrites
    const peerEvents = (s1.watchEventsByResource.peers ?? 0) - (s0.watchEventsByResource.peers ?? 0)
    const peerEventsPerAgentPerS = peerEvents / N / secs
    const registeredAtRelay = sumSamples(await e.relayMetrics(), 'edgemesh_registered_agents')
    const kbPerAgent = (rss - idleRss) / 1024 / N

    // reachable: two random agents introduced by the relay, both sides holding the same session
    const pick = (): FleetAgent => e.agents[Math.floor(Math.random() * e.agents.length)]!
    const a = pick(); let b = pick()
    while (b === a) b = pick()
    await e.takeIncoming()
    const c0 = performance.now()
    const conn = await e.connect(a, b)
    const incoming = await eventually(async () => {
      const got = await e.takeIncoming()
      if (got.length === 0) throw new Error(`${b.nodeName} got no peer-info for ${conn.session}`)
      return got
    }, 5_000, 50)
    const connectMs = Math.round(performance.now() - c0)
    const reached = incoming.some(([session]) => session === conn.session)

    say(`  Lease writes in apiserver_request_total over ${secs.toFixed(1)} s: ${leaseWrites} (the apiserver's own: ${apiserverOwn} ${JSON.stringify(changes)}); the agents' own count of their writes: ${agentWrites}; peer watch events ${peerEvents} in all`)
    const ok = ready.agents === N && s1.registered === N && registeredAtRelay === N && reached && meshWrites === 0 && meshLeaseChanges === 0 && agentWrites === 0 && peerEventsPerAgentPerS <= 0.05
    return {
      detail: `${N} simulated agents on one apiserver + one relay: ${registeredAtRelay}/${N} registered at the relay, ${b.nodeName} reached from ${a.nodeName} (both sides introduced, ${connectMs} ms); ` +
        `${QUIET_S} s at rest: mesh Lease writes ${meshWrites} (apiserver_request_total ${leaseWrites} minus the apiserver's own ${apiserverOwn}), ` +
        `peer watch events ${peerEventsPerAgentPerS.toFixed(3)}/agent/s, relay RSS ${(rss / 2 ** 20).toFixed(1)} MB = idle ${(idleRss / 2 ** 20).toFixed(1)} MB + ${kbPerAgent.toFixed(1)} KB/agent; ${Math.round((Date.now() - t0) / 1000)} s in all`,
      ok
    }
  } finally {
    const left = await env?.stop().catch((err: Error) => [err.message])
    if (left != null && left.length > 0) say(`  scale journey left behind: ${left.join('; ')}`)
  }
}
