// Punching is retried in the background while a peer is only relayed, and new streams move
// to the direct path as soon as it opens; streams already on the relay finish there.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab } from '../lab/lab.ts'
import { Mesh } from '../lab/mesh.ts'
import { eventually } from '../lab/wait.ts'

let lab: Lab
let mesh: Mesh

beforeAll(async () => {
  lab = await createLab({ sites: [{ name: 'a', nat: 'cone' }, { name: 'b', nat: 'cone' }] })
  // retry punching every 2 s (default 30 s) so the test is short
  mesh = await Mesh.start(lab, { agents: ['a1', 'b1'], agentConfig: () => ({ tunnel: { punchRetryMs: 2_000 } }) })
})

afterAll(async () => {
  await mesh?.stop()
  await lab?.teardown()
})

describe('background punching', () => {
  it('when a firewall between two sites opens, new streams move to direct-udp; a running stream stays on the relay', async () => {
    // site b's router drops all traffic to and from site a (the relay stays reachable)
    const aIp = lab.site('a').publicIp
    const router = lab.site('b').router
    const block = async (op: '-I' | '-D'): Promise<void> => {
      for (const dir of ['-s', '-d']) {
        const r = await lab.exec(router, ['iptables', op, 'FORWARD', ...(op === '-I' ? ['1'] : []), dir, aIp, '-j', 'DROP'])
        expect(r.code).toBe(0)
      }
    }
    await block('-I')
    expect((await mesh.ping('a1', 'b1')).path).toBe('relay-udp')
    const running = mesh.call('a1', 'POST', `/diag/transfer?node=edge-b1&direction=send&bytes=${64 * 1024 * 1024}`, 120_000)

    await block('-D')
    const t0 = Date.now()
    await eventually(async () => {
      const { path } = await mesh.ping('a1', 'b1')
      if (path !== 'direct-udp') throw new Error(path)
    }, 15_000, 250)
    // punchRetryMs is 2 s: the direct path opens within a few retries
    expect(Date.now() - t0).toBeLessThan(8_000)
    const r = await running
    expect(r).toMatchObject({ path: 'relay-udp', match: true })
    const peer = (await mesh.status('a1')).peers.find((p: any) => p.node === 'edge-b1')
    expect(peer.path).toBe('direct-udp')
  })
})
