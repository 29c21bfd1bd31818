// Only cluster members get in: a peer missing from the directory, or one with the wrong
// pre-shared key, is refused with a clear log line, and nothing crashes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab } from '../lab/lab.ts'
import { Mesh, metricValue } from '../lab/mesh.ts'
import { eventually } from '../lab/wait.ts'

let lab: Lab
let mesh: Mesh

beforeAll(async () => {
  lab = await createLab({ sites: [{ name: 'a', nat: 'cone', hosts: 3 }, { name: 'b', nat: 'cone' }] })
  mesh = await Mesh.start(lab, { agents: ['a1', 'b1'], psk: true })
})

afterAll(async () => {
  await mesh?.stop()
  await lab?.teardown()
})

describe('cluster membership', () => {
  it('members with the PSK connect', async () => {
    expect((await mesh.ping('a1', 'b1')).path).toMatch(/^(direct|relay)-udp$/)
    await eventually(async () => {
      const { path } = await mesh.ping('a1', 'b1')
      if (path !== 'direct-udp') throw new Error(path)
    }, 5_000)
  })

  it('unknown peer (right PSK, not in the directory) is refused and logged; no crash', async () => {
    const a1 = mesh.agent('a1')
    const x = await mesh.startExtraAgent('a2', {
      psk: 'same',
      peers: [{ name: a1.nodeName, peerId: a1.peerId, addresses: [`/ip4/${lab.host('a1').ip}/tcp/4004`] }]
    })
    await expect(mesh.ping('a2', 'a1')).rejects.toThrow(/cannot reach edge-a1|the peer closed the connection/)
    const line = await a1.proc.waitForLine(new RegExp(`refused (introduction|connection) from unknown peer.*${x.peerId}|${x.peerId}.*refused (introduction|connection) from unknown peer`), 5_000)
    expect(line).toContain('not in the peer directory')
    expect(metricValue(await mesh.agentMetrics('a1'), 'edgemesh_rejected_connections_total', 'reason="unknown-peer"')).toBeGreaterThan(0)
    expect(a1.proc.child.exitCode).toBeNull()
    expect((await mesh.ping('a1', 'b1')).path).toBe('direct-udp')
  })

  it('wrong PSK is refused at the relay and at the peer with a clear log line; no crash', async () => {
    const a1 = mesh.agent('a1')
    const y = await mesh.startExtraAgent('a3', {
      psk: 'wrong',
      peers: [{ name: a1.nodeName, peerId: a1.peerId, addresses: [`/ip4/${lab.host('a1').ip}/tcp/4004`] }]
    })
    // y is a known member by identity, so only the key can be the reason for refusal
    await mesh.writePeersFile([{ name: y.nodeName, peerId: y.peerId }])
    await eventually(async () => {
      const s = await mesh.status('a1')
      if (s.peers.find((p: any) => p.node === y.nodeName) == null) throw new Error('directory not reloaded yet')
    }, 10_000, 200)
    await expect(mesh.ping('a3', 'a1')).rejects.toThrow(/cannot reach edge-a1|the peer closed the connection/)
    const line = await a1.proc.waitForLine(/refused connection: handshake failed \(wrong pre-shared key/, 5_000)
    expect(line).toContain('inbound')
    expect(metricValue(await mesh.agentMetrics('a1'), 'edgemesh_rejected_connections_total', 'reason="handshake"')).toBeGreaterThan(0)
    // the relay refused its registration (PSK MAC) too
    expect(metricValue(await mesh.relayMetrics(), 'edgemesh_dropped_datagrams_total', 'reason="bad-psk-mac"')).toBeGreaterThan(0)
    expect((await mesh.status('a3')).relays[0].udp).toBe('down')
    expect(a1.proc.child.exitCode).toBeNull()
    expect(y.proc.child.exitCode).toBeNull()
    expect((await mesh.ping('a1', 'b1')).path).toBe('direct-udp')
  })
})
