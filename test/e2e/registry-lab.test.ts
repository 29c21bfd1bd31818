// The tunnel finds its peers through the Kubernetes peer registry in the NATed lab: no peers
// file, agents use their ServiceAccount tokens against the real apiserver (reached from the lab
// at the relay's public address), and a node that comes back with a new key is found again.
// The LAN addresses agents publish in their Leases are dialled only on their own site: every
// site router counts SYNs bound for another site's private range.
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab, type LabSite } from '../lab/lab.ts'
import { startK8sMesh, type K8sMesh } from '../lab/k8s-mesh.ts'
import type { Mesh } from '../lab/mesh.ts'
import { eventually } from '../lab/wait.ts'

let lab: Lab
let k: K8sMesh
let mesh: Mesh

const CROSS_SITE_TAG = 'edgemesh-test-cross-site-syn'

/** Counts (and lets through) TCP SYNs from the site's LAN to every other site's LAN. */
async function countCrossSiteSyns (site: LabSite): Promise<void> {
  for (const other of lab.sites.filter((s) => s !== site)) {
    const r = await lab.exec(site.router, ['iptables', '-t', 'raw', '-I', 'PREROUTING', '1', '-i', 'lan0', '-p', 'tcp', '--syn', '-d', other.lanCidr, '-m', 'comment', '--comment', CROSS_SITE_TAG])
    expect(r.code).toBe(0)
  }
}

async function crossSiteSyns (site: LabSite): Promise<number> {
  const r = await lab.exec(site.router, ['iptables-save', '-c', '-t', 'raw'])
  expect(r.code).toBe(0)
  const lines = r.stdout.split('\n').filter((l) => l.includes(CROSS_SITE_TAG))
  expect(lines.length).toBe(lab.sites.length - 1)
  return lines.reduce((sum, l) => sum + Number(/^\[(\d+):/.exec(l)?.[1] ?? NaN), 0)
}

beforeAll(async () => {
  lab = await createLab({ sites: [{ name: 'a', nat: 'cone', hosts: 2 }, { name: 'b', nat: 'symmetric' }, { name: 'c', nat: 'cone' }] })
  for (const site of lab.sites) await countCrossSiteSyns(site)
  k = await startK8sMesh(lab, { agents: ['a1', 'a2', 'b1', 'c1'] })
  mesh = k.mesh
}, 180_000)

afterAll(async () => {
  await k?.stop()
  await lab?.teardown()
})

describe('peer registry in the lab', () => {
  it('agents behind NATs find each other through their Lease records, with no peers file', async () => {
    for (const host of ['a1', 'a2', 'b1', 'c1']) {
      await eventually(async () => {
        const c = await mesh.call(host, 'GET', '/catalog')
        expect(c.source).toBe('api')
        expect(c.peers.map((p: any) => p.node).sort()).toEqual(['edge-a1', 'edge-a2', 'edge-b1', 'edge-c1'])
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

  it('published LAN addresses are dialled on their own site only: no SYN to another site\'s private range, same-site pair on direct-tcp', async () => {
    const disconnect = async (from: string, to: string): Promise<void> => { await mesh.call(from, 'POST', `/diag/disconnect?node=edge-${to}`) }
    for (let round = 0; round < 3; round++) {
      for (const [from, to] of [['a1', 'c1'], ['c1', 'a1'], ['a2', 'b1'], ['b1', 'c1'], ['c1', 'a2']] as const) {
        await disconnect(from, to)
        expect(['direct-udp', 'relay-udp']).toContain((await mesh.ping(from, to)).path)
      }
    }
    await disconnect('a2', 'a1')
    // The dial races every leg and the first stream takes the first connection up: on a busy
    // machine the punched UDP leg can finish its handshake before the LAN TCP leg. The TCP
    // connection still comes up and is the best path from then on: wait for that state.
    await eventually(async () => {
      const same = await mesh.ping('a2', 'a1')
      expect(same.path).toBe('direct-tcp')
      expect(same.remote).toContain(lab.host('a1').ip)
    }, 10_000, 250)
    for (const site of lab.sites) expect(await crossSiteSyns(site), `SYNs leaving site ${site.name} for another site's LAN`).toBe(0)
    // the counter does count: a SYN sent by hand from a1 to c1's LAN address (no route: refused at once)
    await lab.exec('a1', ['timeout', '3', 'bash', '-c', `exec 3<>/dev/tcp/${lab.host('c1').ip}/4004`])
    expect(await crossSiteSyns(lab.site('a'))).toBeGreaterThanOrEqual(1)
  })
})
