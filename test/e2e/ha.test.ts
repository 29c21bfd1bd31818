// Several relays for availability: when one relay dies for good, tunnels and new dials move to
// the other (UDP relay and TCP circuit alike).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab } from '../lab/lab.ts'
import { Mesh } from '../lab/mesh.ts'
import { eventually } from '../lab/wait.ts'

let lab: Lab
let mesh: Mesh

beforeAll(async () => {
  lab = await createLab({ relays: 2, sites: [{ name: 'a', nat: 'cone' }, { name: 'c', nat: 'symmetric' }, { name: 'd', nat: 'udp-blocked' }] })
  mesh = await Mesh.start(lab, { agents: ['a1', 'c1', 'd1'] })
})

afterAll(async () => {
  await mesh?.stop()
  await lab?.teardown()
})

describe('two relays', () => {
  it('agents register with both relays and hold a circuit reservation on each', async () => {
    await eventually(async () => {
      const s = await mesh.status('a1')
      expect(s.relays.map((r: any) => [r.udp, r.circuit])).toEqual([['up', 'reserved'], ['up', 'reserved']])
    }, 10_000, 200)
    const d = await mesh.status('d1')
    expect(d.relays.map((r: any) => r.udp)).toEqual(['down', 'down'])
  })

  it('one relay killed for good: relayed tunnels and new dials continue through the other', async () => {
    const relay0 = lab.relays[0]!.ip
    const r = await mesh.ping('a1', 'c1')
    expect(r.path).toBe('relay-udp')
    expect(r.remote).toBe(`${relay0}:4002`)
    expect((await mesh.ping('d1', 'a1')).path).toBe('relay-tcp')

    await mesh.relays[0]!.proc.kill('SIGKILL')
    const t0 = Date.now()
    const via = async (from: string, to: string, path: string): Promise<{ remote: string, ms: number }> => {
      const res = await eventually(async () => {
        const p = await mesh.ping(from, to)
        if (p.path !== path || p.remote.startsWith(relay0)) throw new Error(`${p.path} ${p.remote}`)
        return p
      }, 20_000, 200)
      return { remote: res.remote, ms: Date.now() - t0 }
    }
    const [udp, tcpOut, tcpIn] = await Promise.all([via('a1', 'c1', 'relay-udp'), via('d1', 'a1', 'relay-tcp'), via('a1', 'd1', 'relay-tcp')])
    expect(udp.remote).toBe(`${lab.relays[1]!.ip}:4002`)
    expect(tcpOut.remote.startsWith(lab.relays[1]!.ip)).toBe(true)
    expect(tcpIn.remote.startsWith(lab.relays[1]!.ip)).toBe(true)
    // bounded by detection (3 missed keepalives) plus a dial
    expect(Math.max(udp.ms, tcpOut.ms, tcpIn.ms)).toBeLessThan(12_000)
  })
})
