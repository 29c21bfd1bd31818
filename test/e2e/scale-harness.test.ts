// The scale harness itself (test/scale/, npm run bench:scale) at N = 20, so it cannot rot: every
// simulated agent registered at the real relay and holding its circuit reservation, its peer
// record in the real apiserver (written with its own pod-bound token), every catalog synced with
// all 20 peers, and a connect between two agents introduces both sides.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MESH_NAMESPACE, ScaleEnv } from '../scale/fleet.ts'
import { apiRequest } from '../controlplane/cluster.ts'
import { eventually } from '../lab/wait.ts'

const N = 20

describe('scale harness (N = 20)', () => {
  let env: ScaleEnv

  beforeAll(async () => {
    env = await ScaleEnv.start({ workers: 2 })
    await env.grow(N)
  }, 180_000)

  afterAll(async () => {
    const left = await env?.stop()
    expect(left ?? []).toEqual([])
  }, 60_000)

  it('registers every simulated agent at the relay, with its reservation, and syncs every catalog with all peers', async () => {
    const s = await eventually(async () => {
      const s = await env.stats()
      if (s.registered < N || s.reserved < N || s.synced < N || s.minPeers < N) throw new Error(`not yet: ${JSON.stringify({ registered: s.registered, reserved: s.reserved, synced: s.synced, minPeers: s.minPeers })}`)
      return s
    }, 90_000, 250)
    expect(s.agents).toBe(N)
    expect(s.dropped).toBe(0)
    const relay = await env.relayMetrics()
    expect(relay).toMatch(new RegExp(`^edgemesh_registered_agents ${N}$`, 'm'))
  })

  it('puts each agent\'s peer record in the apiserver, naming its own peer id', async () => {
    const res = await apiRequest(env.cp, env.cp.adminToken, 'GET', `/apis/coordination.k8s.io/v1/namespaces/${MESH_NAMESPACE}/leases?labelSelector=edgemesh.io%2Fpeer-record%3Dtrue`)
    expect(res.status).toBe(200)
    const byNode = new Map<string, string>(res.body.items.map((l: any) => [l.metadata.name, l.metadata.annotations['edgemesh.io/peer-id']]))
    expect(byNode.size).toBe(N)
    for (const a of env.agents) expect(byNode.get(a.nodeName)).toBe(a.peerId)
  })

  it('introduces two agents to each other through the relay (both sides get the same session)', async () => {
    const [a, b] = [env.agents[3]!, env.agents[N - 2]!]
    await env.takeIncoming()
    const r = await env.connect(a, b)
    const incoming = await eventually(async () => {
      const got = await env.takeIncoming()
      if (got.length === 0) throw new Error('target got no peer-info yet')
      return got
    }, 5_000, 50)
    expect(incoming.map(([session]) => session)).toEqual([r.session])
  })
})
