// Several relays for availability: each agent registers and reserves only at its home relay;
// when one relay dies for good, tunnels and new dials move to the other (UDP relay and TCP
// circuit alike).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab } from '../lab/lab.ts'
import { Mesh, metricValue } from '../lab/mesh.ts'
import { eventually } from '../lab/wait.ts'
import { homeRelay } from '../../agent/tunnel/home-relay.ts'

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

/** the relay index an agent is homed on while every relay is up (home-relay.ts) */
const homeIndex = (host: string): number => mesh.relays.indexOf(homeRelay(mesh.agent(host).peerId, mesh.relays)!)

describe('two relays', () => {
  it('each agent registers and holds a circuit reservation at its home relay only', async () => {
    await eventually(async () => {
      for (const host of ['a1', 'c1', 'd1']) {
        const s = await mesh.status(host)
        const home = homeIndex(host)
        expect(s.relays.map((r: any) => r.role)).toEqual(mesh.relays.map((_, i) => i === home ? 'home' : 'idle'))
        expect(s.relays.map((r: any) => r.circuit)).toEqual(mesh.relays.map((_, i) => i === home ? 'reserved' : 'none'))
        // UDP-blocked d1 registers nowhere; the others only at home
        expect(s.relays.map((r: any) => r.udp)).toEqual(mesh.relays.map((_, i) => i === home && host !== 'd1' ? 'up' : 'down'))
      }
    }, 10_000, 200)
    // the relays' own books agree: each counts only the agents homed on it
    await eventually(async () => {
      for (const [i] of mesh.relays.entries()) {
        const m = await mesh.relayMetrics(i)
        expect(metricValue(m, 'edgemesh_registered_agents')).toBe(['a1', 'c1'].filter((h) => homeIndex(h) === i).length)
        expect(metricValue(m, 'edgemesh_circuit_reservations')).toBe(['a1', 'c1', 'd1'].filter((h) => homeIndex(h) === i).length)
      }
    }, 10_000, 200)
  })

  it('one relay killed for good: relayed tunnels and new dials continue through the other', async () => {
    // the relay c1 is homed on introduces a1 -> c1 (relay-udp through it): that one dies
    const dead = homeIndex('c1')
    const alive = 1 - dead
    const deadIp = lab.relays[dead]!.ip
    const r = await mesh.ping('a1', 'c1')
    expect(r.path).toBe('relay-udp')
    expect(r.remote).toBe(`${deadIp}:4002`)
    expect((await mesh.ping('d1', 'a1')).path).toBe('relay-tcp')

    await mesh.relays[dead]!.proc.kill('SIGKILL')
    const t0 = Date.now()
    const via = async (from: string, to: string, path: string): Promise<{ remote: string, ms: number }> => {
      const res = await eventually(async () => {
        const p = await mesh.ping(from, to)
        if (p.path !== path || p.remote.startsWith(deadIp)) throw new Error(`${p.path} ${p.remote}`)
        return p
      }, 20_000, 200)
      return { remote: res.remote, ms: Date.now() - t0 }
    }
    const [udp, tcpOut, tcpIn] = await Promise.all([via('a1', 'c1', 'relay-udp'), via('d1', 'a1', 'relay-tcp'), via('a1', 'd1', 'relay-tcp')])
    expect(udp.remote).toBe(`${lab.relays[alive]!.ip}:4002`)
    expect(tcpOut.remote.startsWith(lab.relays[alive]!.ip)).toBe(true)
    expect(tcpIn.remote.startsWith(lab.relays[alive]!.ip)).toBe(true)
    // bounded by detection (3 missed keepalives) plus a dial
    expect(Math.max(udp.ms, tcpOut.ms, tcpIn.ms)).toBeLessThan(12_000)
    // every agent is homed on the relay left (the dead one is 'down' where it was in use, else 'idle')
    for (const host of ['a1', 'c1', 'd1']) {
      const roles = (await mesh.status(host)).relays.map((x: any) => x.role)
      expect(roles[alive]).toBe('home')
      expect(['down', 'idle']).toContain(roles[dead])
    }
    expect((await mesh.status('c1')).relays[dead].role).toBe('down')
  })
})
