// The test cluster itself (test/cluster): a kubelet + containerd on relay0 (public) and on one
// host behind a cone NAT and one behind a symmetric NAT, registering through their NATs. A pod
// scheduled to each edge node runs, gets an address from its node's pod range, and its output
// is read back on the node (crictl logs: the apiserver cannot reach an edge kubelet); the same
// hostPath on two nodes is two directories.
// stop() leaves no process, mount, cgroup or directory behind.
import { execFile } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab } from '../lab/lab.ts'
import { eventually } from '../lab/wait.ts'
import { EDGE_ROLE_LABEL, pauseImage, startCluster, type Cluster } from '../cluster/cluster.ts'

let lab: Lab
let cluster: Cluster | undefined
let coldStartMs = 0
const execFileP = promisify(execFile)

beforeAll(async () => {
  lab = await createLab({ sites: [{ name: 'a', nat: 'cone' }, { name: 'b', nat: 'symmetric' }] })
  const t0 = performance.now()
  cluster = await startCluster(lab, { nodes: [{ host: 'relay0', role: 'public' }, { host: 'a1', role: 'edge' }, { host: 'b1', role: 'edge' }] })
  coldStartMs = performance.now() - t0
  console.log(`[cluster] cold start ${Math.round(coldStartMs)} ms (control plane ${Math.round(cluster.timings.controlPlaneMs)} ms, ` +
    `nodes started and Ready ${Math.round(cluster.timings.nodesReadyMs)} ms)`)
}, 300_000)

afterAll(async () => {
  // the lab goes even when the cluster's stop reports leftovers (the failure still shows)
  try { await cluster?.stop() } finally { await lab?.teardown() }
}, 120_000)

describe('test cluster in the NAT lab', () => {
  it('registers all three nodes Ready through their NATs; only the edge nodes carry the edge role', async () => {
    const nodes = (await cluster!.admin('GET', '/api/v1/nodes')).items
    const byName = new Map<string, any>(nodes.map((n: any) => [n.metadata.name, n]))
    expect([...byName.keys()].sort()).toEqual(['a1', 'b1', 'relay0'])
    for (const [name, ip] of [['relay0', '198.51.100.10'], ['a1', '10.1.0.10'], ['b1', '10.2.0.10']] as const) {
      const n = byName.get(name)
      expect(n.status.conditions.find((c: any) => c.type === 'Ready').status).toBe('True')
      expect(n.status.addresses).toContainEqual({ type: 'InternalIP', address: ip })
    }
    expect(byName.get('a1').metadata.labels[EDGE_ROLE_LABEL]).toBe('')
    expect(byName.get('b1').metadata.labels[EDGE_ROLE_LABEL]).toBe('')
    expect(byName.get('relay0').metadata.labels[EDGE_ROLE_LABEL]).toBeUndefined()
  })

  it('runs a pod on each edge node with an IP from its node range; its output is read on the node', async () => {
    // a1 runs the pause image as imported at start (oci-archive); b1 the same image loaded with
    // importImage from a docker-archive under a short name (docker.io/library/... in the CRI)
    const pause = await pauseImage()
    const work = await mkdtemp(join(tmpdir(), 'cluster-test-'))
    const dockerArchive = join(work, 'hello.tar')
    await execFileP('skopeo', ['copy', '--quiet', `oci-archive:${pause.archive}`, `docker-archive:${dockerArchive}:hello:v1`])
    await cluster!.importImage(dockerArchive, 'hello:v1')
    await rm(work, { recursive: true, force: true })
    const images: Record<string, string> = { a1: pause.ref, b1: 'hello:v1' }
    for (const node of ['a1', 'b1']) {
      await cluster!.admin('POST', '/api/v1/namespaces/default/pods', {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: `hello-${node}` },
        spec: {
          nodeSelector: { 'kubernetes.io/hostname': node },
          containers: [{
            name: 'hello',
            image: images[node],
            imagePullPolicy: 'Never',
            args: ['echo', `hello from ${node}`, '--', 'write', '/data/who', node, '--'],
            volumeMounts: [{ name: 'data', mountPath: '/data' }]
          }],
          // the same host path on every node, as a DaemonSet's: each node has its own
          volumes: [{ name: 'data', hostPath: { path: '/var/lib/edgemesh', type: 'DirectoryOrCreate' } }],
          terminationGracePeriodSeconds: 1
        }
      })
    }
    for (const name of ['a1', 'b1']) {
      const node = cluster!.node(name)
      const pod = await eventually(async () => {
        const p = await cluster!.admin('GET', `/api/v1/namespaces/default/pods/hello-${name}`)
        if (p.status.phase !== 'Running' || p.status.podIP === undefined) throw new Error(`hello-${name}: ${p.status.phase} ${JSON.stringify(p.status.containerStatuses ?? p.status.conditions)}`)
        return p
      }, 90_000, 500)
      expect(pod.spec.nodeName).toBe(name)
      const prefix = node.podCidr.replace(/\.0\/24$/, '.')
      expect(pod.status.podIP.startsWith(prefix)).toBe(true)
      // the pod's token volume came from the kubelet (ServiceAccount admission + projected token)
      expect(pod.spec.volumes.some((v: any) => v.projected?.sources?.some((s: any) => s.serviceAccountToken !== undefined))).toBe(true)
      const logs = await eventually(async () => {
        const out = await node.containerLogs(`hello-${name}`)
        if (!out.includes('hello')) throw new Error(`no output yet: ${out}`)
        return out
      }, 20_000)
      expect(logs.trim()).toBe(`hello from ${name}`)
      // a command in the running container, through the node's runtime (not the apiserver)
      const ran = await node.containerExec(`hello-${name}`, ['/pause', 'echo', 'exec on', name, '--', 'sleep', '0'])
      expect(ran.code).toBe(0)
      expect(ran.stdout.trim()).toBe(`exec on ${name}`)
      expect(readFileSync(node.hostPath('/var/lib/edgemesh/who'), 'utf8')).toBe(`${name}\n`)
      expect((await node.exec(['cat', '/var/lib/edgemesh/who'])).stdout).toBe(`${name}\n`)
      // the pod's interface lives in a network namespace behind the node's cni0 bridge
      const bridge = await node.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', 'cni0'])
      expect(bridge.stdout).toContain(`${prefix}1/24`)
    }
  })

  it('the kubernetes Service address (10.96.0.1:443) reaches the apiserver from every node, relay0 included', async () => {
    for (const node of cluster!.nodes) {
      const r = await node.exec(['curl', '-sS', '--max-time', '10', '--cacert', join(node.dir, 'pki/ca.crt'), 'https://10.96.0.1/readyz'])
      expect(r.stdout + r.stderr).toBe('ok')
    }
  })

  it('stop() leaves no process, mount, cgroup or directory of the cluster behind', async () => {
    const c = cluster!
    const dirs = [c.dir, ...c.nodes.map(n => n.dir)]
    const sock = c.nodes.map(n => `${n.dir}/containerd.sock`)
    // each node's mount namespace (its kubelet, containerd, shims and containers live in it)
    const mountNamespaces = await Promise.all(c.nodes.map(async n => (await n.exec(['readlink', '/proc/self/ns/mnt'])).stdout.trim()))
    expect(new Set(mountNamespaces).size).toBe(c.nodes.length)
    expect(mountNamespaces).not.toContain(readlinkSync('/proc/self/ns/mnt'))
    cluster = undefined
    await c.stop()
    const stillUsed = readdirSync('/proc').filter(p => /^\d+$/.test(p)).filter(p => {
      try { return mountNamespaces.includes(readlinkSync(`/proc/${p}/ns/mnt`)) } catch { return false }
    })
    expect(stillUsed).toEqual([])
    for (const d of dirs) expect(existsSync(d)).toBe(false)
    expect(existsSync('/var/lib/edgemesh/who')).toBe(false)
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    expect(mounts.includes(c.dir)).toBe(false)
    const cgroupRoots = readdirSync('/sys/fs/cgroup/memory').filter(d => d.startsWith(`edgemesh-${lab.prefix}`))
    expect(cgroupRoots).toEqual([])
    const leftovers = readdirSync('/proc').filter(p => /^\d+$/.test(p)).filter(p => {
      try { return sock.some(s => readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(s)) || readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(c.dir) } catch { return false }
    })
    expect(leftovers).toEqual([])
  })
})
