// npm run demo — the product end to end in a throwaway lab: a relay on the "internet" and
// edge sites behind their own NATs (two cone, one symmetric, one with UDP blocked), a real
// etcd + kube-apiserver in the cloud (the agents use their ServiceAccount tokens and find each
// other through the Lease registry, with no peers file), the real edgemesh-server and
// edgemesh-agent binaries with node-local DNS and the ClusterIP proxy, pods (namespaces behind
// the edge hosts) calling Services by DNS name across NATs, and every user journey built so
// far, ending in a status table. The last journey installs the Helm chart with the image built
// from manifests/Dockerfile on real kubelets in a lab of its own (test/demo/helm-journey.ts);
// the one before it, relay federation, has a two-relay lab of its own (test/demo/federation-journey.ts);
// before that, 60 simulated agents on a control plane and relay of their own show the mesh at
// rest (test/demo/scale-journey.ts).
// The lab and the control plane are torn down on success, failure and Ctrl-C.
import { join } from 'node:path'
import { createLab, type Lab, type LabPod, type LabProcess } from '../lab/lab.ts'
import { startK8sMesh, type K8sMesh } from '../lab/k8s-mesh.ts'
import { ensureNamespace } from '../controlplane/cluster.ts'
import { renderTable } from '../../shared/table.ts'
import { sleep } from '../lab/wait.ts'
import { CLI_BIN } from '../lab/mesh.ts'
import { clientKeys, sshOptions, startSshd } from '../lab/sshd.ts'
import { helmInstallJourney } from './helm-journey.ts'
import { relayFederationJourney } from './federation-journey.ts'
import { scaleJourney } from './scale-journey.ts'

const say = (s: string): void => { process.stdout.write(`${s}\n`) }
const WORKLOAD = join(import.meta.dirname, '../lab/workload.mjs')

interface Journey { name: string, run: () => Promise<{ detail: string, ok: boolean }> }

async function main (): Promise<number> {
  let lab: Lab | undefined
  let k: K8sMesh | undefined
  let upstream: LabProcess | undefined
  const hosts = ['a1', 'b1', 'c1', 'd1']
  try {
    say('edgemesh demo: building the lab (relay 198.51.100.10; sites a, b: cone NAT; c: symmetric NAT; d: UDP blocked)')
    lab = await createLab({
      sites: [{ name: 'a', nat: 'cone' }, { name: 'b', nat: 'cone' }, { name: 'c', nat: 'symmetric' }, { name: 'd', nat: 'udp-blocked' }]
    })
    say(`lab ${lab.prefix} up in ${lab.setupMs} ms; starting an upstream resolver (dnsmasq) and etcd + kube-apiserver, both at 198.51.100.10 for the sites`)
    upstream = lab.spawn('relay0', ['dnsmasq', '--no-daemon', '--no-resolv', '--no-hosts', '--bind-interfaces', '--listen-address=198.51.100.10', '--port=53', '--address=/example.org/203.0.113.7', '--log-facility=-'])
    await upstream.waitForLine(/started, version/, 10_000)
    const t0 = Date.now()
    k = await startK8sMesh(lab, { agents: hosts, psk: true, agentConfig: () => ({ dns: { upstreams: ['198.51.100.10:53'] }, proxy: {}, socks5: {} }) })
    say(`control plane, chart RBAC + admission policy (${k.rbac.objects.length} objects), edgemesh-server and 4 agents (pod-bound ServiceAccount tokens, the mesh's pre-shared key, no peers file, DNS on 169.254.96.16, ClusterIP proxy) up in ${Date.now() - t0} ms`)
    // pods: namespaces behind the edge hosts; the client resolves through the node-local DNS like a kubelet-configured pod
    const resolvConf = 'search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 169.254.96.16\noptions ndots:5\n'
    const client = await lab.addPod('a1', { resolvConf })
    const podOn = async (host: string, args: string[]): Promise<LabPod> => {
      const pod = await lab!.addPod(host)
      const p = lab!.spawn(pod, [process.execPath, WORKLOAD, ...args])
      await p.waitForLine(/listening/, 10_000)
      return pod
    }
    const checkoutPod = await podOn('b1', ['http', 'checkout@edge-b1', '8080'])
    const paymentsPod = await podOn('c1', ['http', 'payments@edge-c1', '8080'])
    const cartPod = await podOn('a1', ['http', 'cart@edge-a1', '8080'])
    const echoPod = await podOn('b1', ['udp-echo', '5353'])
    const endpointSlice = (service: string, pod: LabPod, port = 8080, protocol = 'TCP', portName = 'http'): unknown => ({
      metadata: { name: `${service}-1`, labels: { 'kubernetes.io/service-name': service } }, addressType: 'IPv4',
      ports: [{ name: portName, port, protocol }], endpoints: [{ addresses: [pod.ip], conditions: { ready: true }, nodeName: `edge-${pod.node}` }]
    })
    const curlByName = async (name: string): Promise<{ body: string, ms: number, dnsMs: number }> => {
      const r = await lab!.exec(client, ['curl', '-sS', '--max-time', '5', '-o', '-', '-w', ' %{time_namelookup} %{time_total}', `http://${name}/`], { timeoutMs: 10_000 })
      if (r.code !== 0) throw new Error(`curl http://${name}/: ${r.stderr.trim()}`)
      const [body, dns, secs] = r.stdout.trim().split(/\s+/)
      return { body: body ?? '', ms: +(Number(secs) * 1000).toFixed(1), dnsMs: +(Number(dns) * 1000).toFixed(1) }
    }
    const retry = async <T>(fn: () => Promise<T>, ms = 15_000): Promise<T> => {
      const end = Date.now() + ms
      for (;;) { try { return await fn() } catch (err) { if (Date.now() > end) throw err; await sleep(200) } }
    }
    const m = k.mesh
    const api = k.cp
    const admin = k.admin
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
      name: 'a pod-like process on edge-a1 resolves the Service by name (node-local DNS)',
      run: async () => {
        const ip = (await admin('GET', '/api/v1/namespaces/shop/services/checkout')).spec.clusterIP as string
        const r = await lab!.exec('a1', ['dig', '@169.254.96.16', '+short', 'checkout.shop.svc.cluster.local'])
        const srv = await lab!.exec('a1', ['dig', '@169.254.96.16', '+short', '_http._tcp.checkout.shop.svc.cluster.local', 'SRV'])
        const ext = await lab!.exec('a1', ['dig', '@169.254.96.16', '+short', 'www.example.org'])
        return {
          detail: `checkout.shop.svc.cluster.local -> ${r.stdout.trim()}; SRV ${srv.stdout.trim()}; www.example.org (forwarded) -> ${ext.stdout.trim()}`,
          ok: r.stdout.trim() === ip && srv.stdout.includes('80 checkout.shop.svc.cluster.local.') && ext.stdout.trim() === '203.0.113.7'
        }
      }
    })
    journeys.push({
      name: 'a pod on edge-a1 calls checkout.shop by DNS name; its endpoint is a pod on edge-b1 behind another NAT',
      run: async () => {
        await admin('POST', '/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices', endpointSlice('checkout', checkoutPod))
        const r = await retry(async () => await curlByName('checkout.shop.svc.cluster.local'))
        const path = (await m.status('a1')).peers.find((p: any) => p.node === 'edge-b1')?.path
        return { detail: `curl http://checkout.shop.svc.cluster.local/ -> "${r.body}" in ${r.ms} ms, name lookup ${r.dnsMs} ms (DNS 169.254.96.16 -> ClusterIP -> agent -> tunnel ${String(path)} -> pod ${checkoutPod.ip})`, ok: r.body === 'checkout@edge-b1' }
      }
    })
    journeys.push({
      name: 'the same by short name to payments, a pod on edge-c1 behind a symmetric NAT (relayed)',
      run: async () => {
        await admin('POST', '/api/v1/namespaces/shop/services', { metadata: { name: 'payments' }, spec: { ports: [{ name: 'http', port: 80, targetPort: 8080 }] } })
        await admin('POST', '/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices', endpointSlice('payments', paymentsPod))
        const r = await retry(async () => await curlByName('payments'))
        const path = (await m.status('a1')).peers.find((p: any) => p.node === 'edge-c1')?.path
        return { detail: `curl http://payments/ -> "${r.body}" in ${r.ms} ms (name lookup ${r.dnsMs} ms) via ${String(path)}`, ok: r.body === 'payments@edge-c1' && path === 'relay-udp' }
      }
    })
    journeys.push({
      name: 'ssh edge node behind symmetric NAT by name (OpenSSH, ProxyCommand edgemesh nc %h %p)',
      run: async () => {
        // a real sshd on edge-c1 (throwaway host key pinned to its name); the operator is on edge-a1
        const keys = await clientKeys(join(k!.dir, 'ssh'))
        await startSshd(lab!, 'c1', keys, ['edge-c1.edge'])
        const t = Date.now()
        const r = await retry(async () => {
          const res = await lab!.exec('a1', ['ssh', ...sshOptions(keys, `${process.execPath} ${CLI_BIN} nc %h %p`), 'root@edge-c1.edge', 'ip -4 -o addr show dev eth0 | awk \'{print $4}\''], { timeoutMs: 60_000 })
          if (res.code !== 0) throw new Error(`ssh exit ${res.code}: ${res.stderr.trim()}`)
          return res
        }, 30_000)
        const path = (await m.status('a1')).peers.find((p: any) => p.node === 'edge-c1')?.path
        return { detail: `ssh root@edge-c1.edge (from edge-a1, SOCKS5 169.254.96.16:10800) ran 'ip addr' there: ${r.stdout.trim()} in ${Date.now() - t} ms via ${String(path)}`, ok: r.stdout.trim() === `${lab!.host('c1').ip}/24` && path === 'relay-udp' }
      }
    })
    journeys.push({
      name: 'a Service with a local endpoint: kernel DNAT, no agent hop',
      run: async () => {
        await admin('POST', '/api/v1/namespaces/shop/services', { metadata: { name: 'cart' }, spec: { ports: [{ name: 'http', port: 80, targetPort: 8080 }] } })
        await admin('POST', '/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices', endpointSlice('cart', cartPod))
        await retry(async () => await curlByName('cart'))
        const hops = async (): Promise<number> => (await m.agentMetrics('a1')).split('\n').filter((l) => l.startsWith('edgemesh_proxy_connections_total')).reduce((a, l) => a + Number(l.split(' ').at(-1)), 0)
        const before = await hops()
        const bodies = new Set<string>()
        for (let i = 0; i < 10; i++) bodies.add((await curlByName('cart')).body)
        const after = await hops()
        return { detail: `10 calls -> ${[...bodies].join(',')}; connections through the agent: ${after - before}`, ok: bodies.size === 1 && bodies.has('cart@edge-a1') && after === before }
      }
    })
    journeys.push({
      name: 'a UDP Service across NATs: 2,000 datagrams echoed by a pod on edge-b1',
      run: async () => {
        await admin('POST', '/api/v1/namespaces/shop/services', { metadata: { name: 'echo' }, spec: { ports: [{ name: 'echo', port: 7, protocol: 'UDP', targetPort: 5353 }] } })
        await admin('POST', '/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices', endpointSlice('echo', echoPod, 5353, 'UDP', 'echo'))
        const ip = (await admin('GET', '/api/v1/namespaces/shop/services/echo')).spec.clusterIP as string
        await sleep(500)
        const r = await lab!.exec(client, [process.execPath, WORKLOAD, 'udp-blast', ip, '7', '2000', '32'], { timeoutMs: 90_000 })
        const out = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}')
        return { detail: `${String(out.intact)} of 2000 intact, ${String(out.lost)} lost, ${String(out.corrupted)} corrupted`, ok: out.intact >= 1990 && out.corrupted === 0 }
      }
    })
    journeys.push({
      name: 'a Service with no ready endpoint is refused at once (no hanging client)',
      run: async () => {
        await admin('POST', '/api/v1/namespaces/shop/services', { metadata: { name: 'soon' }, spec: { ports: [{ name: 'http', port: 80, targetPort: 8080 }] } })
        // refused means: the name resolves (the agent knows the Service) and the connect fails with ECONNREFUSED (curl exit 7);
        // wait until the agent has synced the new Service (a SYN sent before its rules leaves the node untranslated: issue 11), then time a fresh call
        const curlSoon = async (): Promise<{ code: number, ms: number, err: string }> => {
          const c = await lab!.exec(client, ['curl', '-sS', '--max-time', '5', '-o', '/dev/null', '-w', '%{time_total}', 'http://soon/'], { timeoutMs: 10_000 })
          return { code: c.code ?? -1, ms: +(Number(c.stdout.trim()) * 1000).toFixed(1), err: c.stderr.trim().split('\n').at(-1) ?? '' }
        }
        await retry(async () => { const c = await curlSoon(); if (c.code !== 7) throw new Error(`curl exit ${c.code}: ${c.err}`) })
        const r = await curlSoon()
        return { detail: `curl http://soon/ -> exit ${r.code} (${r.err}) in ${r.ms} ms`, ok: r.code === 7 && r.ms < 1_000 }
      }
    })
    journeys.push({
      name: 'a malformed HTTP request to the relay\'s public port gets a 400; the relay lives on',
      run: async () => {
        // the one line that used to kill edgemesh-server (an uncaught ERR_INVALID_URL)
        const script = `const s=require('net').connect(9090,'198.51.100.10',()=>s.end('GET //[ HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'));let b='';s.on('data',d=>b+=d);s.on('close',()=>{console.log(b.split('\\r\\n')[0]);process.exit(0)});setTimeout(()=>process.exit(1),5000)`
        const r = await lab!.exec('a1', [process.execPath, '-e', script], { timeoutMs: 10_000 })
        const status = r.stdout.trim()
        const relayAlive = m.relays[0]!.proc.child.exitCode === null
        const metrics = await m.relayMetrics()
        const counted = metrics.split('\n').find((l) => l.startsWith('edgemesh_http_rejected_requests_total{') && l.includes('bad-url')) ?? 'not counted'
        return { detail: `"${status}"; relay still running: ${relayAlive}; ${counted}`, ok: status.startsWith('HTTP/1.1 400') && relayAlive && counted !== 'not counted' }
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
        // each relayed tunnel has recovered when a new stream (a ping) over it answers again
        const recovered = async (from: string, to: string): Promise<{ ms: number, path: string } | null> => {
          for (;;) {
            try {
              const r = await m.ping(from, to)
              return { ms: Date.now() - t0, path: r.path }
            } catch {
              if (Date.now() - t0 > 15_000) return null
              await sleep(100)
            }
          }
        }
        const legs = await Promise.all([recovered('a1', 'c1'), recovered('d1', 'b1')])
        const names = ['edge-a1 -> edge-c1', 'edge-d1 -> edge-b1']
        const detail = legs.map((l, i) => l == null ? `${names[i]}: no recovery in 15 s` : `${names[i]} ${l.path} after ${l.ms} ms`).join('; ')
        return { detail: `relayed pings answer after the restart: ${detail}`, ok: legs.every((l) => l != null && l.ms < 5_000) }
      }
    })

    journeys.push({
      name: 'at scale (own apiserver + relay): 60 simulated agents registered and reachable; 15 s at rest: no mesh Lease writes, ~0 peer watch events, relay RSS per agent',
      run: async () => await scaleJourney(say)
    })

    journeys.push({
      name: 'relay federation (own lab, two relays): agents homed on different relays connect; the home relay killed, its agent moves and is reached again within 5 s',
      run: async () => await relayFederationJourney(say)
    })

    journeys.push({
      name: 'helm install on real kubelets behind NATs (own lab): one command, a pod calls a Service across NATs, uninstall leaves nodes clean',
      run: async () => await helmInstallJourney(say)
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
    say('$ edgemesh proxy   (on edge-a1)')
    say(await m.cli('a1', ['proxy']))
    say(renderTable(['RESULT', 'JOURNEY', 'DETAIL'], rows))
    say(`\n${journeys.length - failed} of ${journeys.length} journeys passed`)
    return failed === 0 ? 0 : 1
  } finally {
    await k?.stop()
    await upstream?.kill()
    await lab?.teardown()
    say('lab and control plane torn down')
  }
}

process.exitCode = await main()
