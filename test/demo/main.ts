// npm run demo — the product end to end in a throwaway lab: a relay on the "internet" and
// edge sites behind their own NATs (two cone, one symmetric, one with UDP blocked), a real
// etcd + kube-apiserver in the cloud (the agents use their ServiceAccount tokens and find each
// other through the Lease registry, with no peers file), the real edgemesh-server and
// edgemesh-agent binaries, and every user journey built so far, ending in a status table.
// The lab and the control plane are torn down on success, failure and Ctrl-C.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createLab, type Lab } from '../lab/lab.ts'
import { Mesh } from '../lab/mesh.ts'
import { exposeToLab } from '../lab/expose.ts'
import { startControlPlane, type ControlPlane } from '../controlplane/harness.ts'
import { agentToken, apiRequest, ensureNamespace, installMeshRbac } from '../controlplane/cluster.ts'
import { renderTable } from '../../shared/table.ts'
import { sleep } from '../lab/wait.ts'

const say = (s: string): void => { process.stdout.write(`${s}\n`) }

interface Journey { name: string, run: () => Promise<{ detail: string, ok: boolean }> }

async function main (): Promise<number> {
  let lab: Lab | undefined
  let mesh: Mesh | undefined
  let cp: ControlPlane | undefined
  let exposed: { close: () => Promise<void> } | undefined
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-demo-'))
  const hosts = ['a1', 'b1', 'c1', 'd1']
  try {
    say('edgemesh demo: building the lab (relay 198.51.100.10; sites a, b: cone NAT; c: symmetric NAT; d: UDP blocked)')
    lab = await createLab({
      sites: [{ name: 'a', nat: 'cone' }, { name: 'b', nat: 'cone' }, { name: 'c', nat: 'symmetric' }, { name: 'd', nat: 'udp-blocked' }]
    })
    say(`lab ${lab.prefix} up in ${lab.setupMs} ms; starting etcd + kube-apiserver (reachable from the sites at 198.51.100.10:6443)`)
    const t0 = Date.now()
    cp = await startControlPlane({ extraSans: ['198.51.100.10'] })
    const rbac = await installMeshRbac(cp)
    exposed = await exposeToLab(lab, 'relay0', { ip: '198.51.100.10', port: 6443 }, { host: '127.0.0.1', port: cp.port })
    const kubeconfigs = new Map<string, string>()
    for (const h of hosts) {
      const file = join(dir, `${h}.kubeconfig`)
      await cp.writeKubeconfig(file, await agentToken(cp, { nodeName: `edge-${h}` }), 'https://198.51.100.10:6443')
      kubeconfigs.set(h, file)
    }
    say(`control plane ready in ${Date.now() - t0} ms (chart RBAC + admission policy applied: ${rbac.objects.length} objects); starting edgemesh-server and 4 agents (pod-bound ServiceAccount tokens, no peers file)`)
    mesh = await Mesh.start(lab, {
      agents: hosts,
      peersFile: false,
      agentConfig: (h) => ({ kubernetes: { kubeconfig: kubeconfigs.get(h), namespace: 'edgemesh', snapshotFile: join(dir, `${h}-catalog.json`) } })
    })
    const m = mesh
    const api = cp
    const admin = async (method: string, path: string, body?: unknown): Promise<any> => {
      const r = await apiRequest(api, api.adminToken, method, path, body)
      if (r.status > 299) throw new Error(`${method} ${path}: ${r.status} ${r.text.slice(0, 200)}`)
      return r.body
    }
    const peersSeen = async (h: string): Promise<string[]> => (await m.call(h, 'GET', '/catalog')).peers.map((p: any) => p.node).sort()
    const expected = (from: string, to: string): string => {
      const kind = (h: string): string => lab!.site(h[0]!).nat
      if (kind(from) === 'udp-blocked' || kind(to) === 'udp-blocked') return 'relay-tcp'
      if (kind(from) === 'symmetric' || kind(to) === 'symmetric') return 'relay-udp'
      return 'direct-udp'
    }

    const journeys: Journey[] = []
    journeys.push({
      name: 'peer registry: every agent finds the others through their Leases',
      run: async () => {
        const t = Date.now()
        for (;;) {
          const seen = await Promise.all(hosts.map(peersSeen))
          if (seen.every((s) => s.length === hosts.length)) return { detail: `4 agents x 4 peer records (${Date.now() - t} ms after start-up)`, ok: true }
          if (Date.now() - t > 20_000) return { detail: `seen: ${JSON.stringify(seen)}`, ok: false }
          await sleep(200)
        }
      }
    })
    for (const from of hosts) {
      for (const to of hosts) {
        if (from === to) continue
        journeys.push({
          name: `edgemesh ping ${m.nodeName(to)} (from ${m.nodeName(from)})`,
          run: async () => {
            const out = (await m.cli(from, ['ping', m.nodeName(to)])).trim()
            const want = expected(from, to)
            // the first stream may ride the relay while the punch completes; a second ping
            // shows the path the tunnel settles on
            const settled = want === 'direct-udp' && !out.includes(want) ? (await m.cli(from, ['ping', m.nodeName(to)])).trim() : out
            return { detail: settled.replace(/^pong from \S+ /, ''), ok: settled.includes(` via ${want} `) }
          }
        })
      }
    }
    journeys.push({
      name: 'bulk transfer edge-a1 -> edge-b1, 32 MiB, SHA-256 equal',
      run: async () => {
        const r = await m.call('a1', 'POST', `/diag/transfer?node=edge-b1&direction=send&bytes=${32 * 1024 * 1024}`)
        return { detail: `${r.path}, ${r.mbps} Mbit/s, sha256 ${String(r.sha256Local).slice(0, 12)}…`, ok: r.match === true }
      }
    })
    journeys.push({
      name: 'Service created through the API reaches every agent\'s catalog',
      run: async () => {
        await ensureNamespace(api, 'shop')
        const t = Date.now()
        await admin('POST', '/api/v1/namespaces/shop/services', { metadata: { name: 'checkout' }, spec: { ports: [{ name: 'http', port: 80 }] } })
        const ip = (await admin('GET', '/api/v1/namespaces/shop/services/checkout')).spec.clusterIP
        for (;;) {
          const views = await Promise.all(hosts.map(async (h) => (await m.call(h, 'GET', '/catalog?full=1')).services['shop/checkout']))
          if (views.every((v) => v?.clusterIPs?.[0] === ip)) return { detail: `shop/checkout ${String(ip)} on all 4 agents within ${Date.now() - t} ms`, ok: true }
          if (Date.now() - t > 10_000) return { detail: 'not everywhere after 10 s', ok: false }
          await sleep(20)
        }
      }
    })
    journeys.push({
      name: 'agent restarted while the apiserver is down serves its disk snapshot',
      run: async () => {
        const d1 = m.agent('d1')
        await d1.proc.kill('SIGTERM')
        await api.stopApiserver('SIGKILL')
        await m.startAgent(d1)
        const offline = await m.call('d1', 'GET', '/catalog')
        const ping = await m.ping('d1', 'a1')
        await api.startApiserver()
        const t = Date.now()
        while ((await m.call('d1', 'GET', '/catalog')).source !== 'api' && Date.now() - t < 30_000) await sleep(200)
        const back = await m.call('d1', 'GET', '/catalog')
        return {
          detail: `offline: ${String(offline.source)}, ${String(offline.counts.services)} services, ${String(offline.counts.peers)} peers, ping ${ping.path}; API back: ${String(back.source)} after ${Date.now() - t} ms`,
          ok: offline.source === 'disk' && offline.counts.peers === 4 && back.source === 'api'
        }
      }
    })
    journeys.push({
      name: 'relay SIGKILLed and restarted: tunnels recover',
      run: async () => {
        await m.restartRelay(0)
        const t0 = Date.now()
        for (;;) {
          try {
            const r = await m.ping('a1', 'c1')
            const d = await m.ping('d1', 'b1')
            return { detail: `relayed pings answer ${Date.now() - t0} ms after restart (${r.path}, ${d.path})`, ok: Date.now() - t0 < 5_000 }
          } catch {
            if (Date.now() - t0 > 15_000) return { detail: 'no recovery in 15 s', ok: false }
            await sleep(100)
          }
        }
      }
    })

    const rows: string[][] = []
    let failed = 0
    for (const j of journeys) {
      let r: { detail: string, ok: boolean }
      try { r = await j.run() } catch (err: any) { r = { detail: err.message, ok: false } }
      if (!r.ok) failed++
      rows.push([r.ok ? 'PASS' : 'FAIL', j.name, r.detail])
      say(`${r.ok ? 'PASS' : 'FAIL'}  ${j.name}: ${r.detail}`)
    }

    say('\n$ edgemesh status   (on edge-a1)')
    say(await m.cli('a1', ['status']))
    say('$ edgemesh catalog   (on edge-a1)')
    say(await m.cli('a1', ['catalog']))
    say(renderTable(['RESULT', 'JOURNEY', 'DETAIL'], rows))
    say(`\n${journeys.length - failed} of ${journeys.length} journeys passed`)
    return failed === 0 ? 0 : 1
  } finally {
    await mesh?.stop()
    await exposed?.close()
    await lab?.teardown()
    await cp?.stop()
    await rm(dir, { recursive: true, force: true })
    say('lab and control plane torn down')
  }
}

process.exitCode = await main()
