// The tunnel finds its peers through the Kubernetes peer registry in the NATed lab: no peers
// file, agents use their ServiceAccount tokens against the real apiserver (reached from the lab
// at the relay's public address), and a node that comes back with a new key is found again.
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab } from '../lab/lab.ts'
import { startK8sMesh, type K8sMesh } from '../lab/k8s-mesh.ts'
import type { Mesh } from '../lab/mesh.ts'
import { eventually } from '../lab/wait.ts'

let lab: Lab
let k: K8sMesh
let mesh: Mesh

beforeAll(async () => {
  lab = await createLab({ sites: [{ name: 'a', nat: 'cone' }, { name: 'b', nat: 'symmetric' }, { name: 'c', nat: 'cone' }] })
  k = await startK8sMesh(lab, { agents: ['a1', 'b1', 'c1'] })
  mesh = k.mesh
}, 180_000)

afterAll(async () => {
  await k?.stop()
  await lab?.teardown()
})

describe('peer registry in the lab', () => {
  it('agents behind NATs find each other through their Lease records, with no peers file', async () => {
    for (const host of ['a1', 'b1', 'c1']) {
      await eventually(async () => {
        const c = await mesh.call(host, 'GET', '/catalog')
        expect(c.source).toBe('api')
        expect(c.peers.map((p: any) => p.node).sort()).toEqual(['edge-a1', 'edge-b1', 'edge-c1'])
      }, 20_000, 250)
    }
    expect((await mesh.ping('a1', 'c1')).path).toBe('direct-udp')
    expect((await mesh.ping('a1', 'b1')).path).toBe('relay-udp') // b is behind a symmetric NAT
    expect((await mesh.ping('c1', 'a1')).path).toBe('direct-udp')
  })

  it('a node that returns with a new identity is found under its new peer id', async () => {
    const c1 = mesh.agent('c1')
    const oldId = c1.peerId
    await c1.proc.kill('SIGTERM')
    await rm(join(mesh.dir, 'c1.key'), { force: true })
    await mesh.startAgent(c1)
    const newId = (await mesh.status('c1')).peerId as string
    expect(newId).not.toBe(oldId)
    await eventually(async () => {
      const c = await mesh.call('a1', 'GET', '/catalog')
      expect(c.peers.find((p: any) => p.node === 'edge-c1')?.peerId).toBe(newId)
    }, 20_000, 250)
    await eventually(async () => { expect((await mesh.ping('a1', 'c1')).path).toBe('direct-udp') }, 20_000, 500)
  })
})
