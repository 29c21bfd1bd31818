// The demo's install journey: the image built from manifests/Dockerfile and the chart from the
// repository on real kubelets behind NATs (its own lab: a public node, an edge node behind a
// cone NAT, one behind a symmetric NAT), `helm install` with only the relay's address, a pod
// calling a Service by name across the NATs, `helm uninstall` leaving the nodes clean.
import { createLab, type Lab } from '../lab/lab.ts'
import { startCluster, type Cluster } from '../cluster/cluster.ts'
import {
  AGENT_SELECTOR, CHART_DIR, MESH_NAMESPACE, SERVER_SELECTOR, agentStatus, answersAfter, createClient, createWeb, helm, meshLeftovers, waitReady
} from '../cluster/mesh-release.ts'
import { ensureImage } from '../image/image.ts'

export async function helmInstallJourney (say: (s: string) => void): Promise<{ detail: string, ok: boolean }> {
  let lab: Lab | undefined
  let cluster: Cluster | undefined
  try {
    const image = await ensureImage()
    say(`  image ${image.ref}: ${Math.round(image.sizeBytes / 2 ** 20)} MiB${image.cached ? ' (cached build)' : `, built in ${Math.round(image.buildMs / 1000)} s`}`)
    lab = await createLab({ sites: [{ name: 'k', nat: 'cone', hosts: 1 }, { name: 'l', nat: 'symmetric', hosts: 1 }] })
    const t0 = Date.now()
    cluster = await startCluster(lab, { nodes: [{ host: 'relay0', role: 'public' }, { host: 'k1', role: 'edge' }, { host: 'l1', role: 'edge' }] })
    const c = cluster
    const [, cone, sym] = c.nodes as [typeof c.nodes[0], typeof c.nodes[0], typeof c.nodes[0]]
    await c.importImage(image.archive, image.ref)
    say(`  cluster up in ${Date.now() - t0} ms (apiserver, controller-manager, scheduler, 3 kubelets + containerd + kube-proxy), image loaded`)
    const t1 = Date.now()
    const install = await helm(c, ['install', 'em', CHART_DIR, '-n', MESH_NAMESPACE, '--create-namespace', '--set', 'relay.announce[0]=198.51.100.10'])
    if (install.code !== 0) return { detail: `helm install failed: ${install.out.slice(-300)}`, ok: false }
    await waitReady(c, MESH_NAMESPACE, SERVER_SELECTOR, 1, 240_000)
    await waitReady(c, MESH_NAMESPACE, AGENT_SELECTOR, 3, 240_000)
    const readyMs = Date.now() - t1
    await c.admin('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } })
    await createWeb(c, 'shop', sym, image.ref)
    await waitReady(c, 'shop', 'app=web', 1, 120_000)
    const since = Date.now()
    await createClient(c, 'shop', cone, image.ref, 'http://web.shop.svc.cluster.local/', 500)
    const answers = await answersAfter(cone, 'shop', since, 3, 120_000)
    const path = (await agentStatus(c, cone)).peers.find((p: any) => p.node === sym.name)?.path ?? 'none'
    const uninstall = await helm(c, ['uninstall', 'em', '-n', MESH_NAMESPACE, '--wait', '--timeout', '3m'])
    if (uninstall.code !== 0) return { detail: `helm uninstall failed: ${uninstall.out.slice(-300)}`, ok: false }
    const left: string[] = []
    for (const n of c.nodes) {
      // the agents' clean exit removes what they made; wait until their containers are gone
      for (let i = 0; i < 240; i++) {
        if ((await n.crictl(['ps', '-q', '--name', '^(agent|server)$'])).stdout.trim() === '') break
        await new Promise((resolve) => setTimeout(resolve, 500))
      }
      left.push(...(await meshLeftovers(n)).map((l) => `${n.name}: ${l}`))
    }
    const body = answers[0]?.body ?? ''
    const ok = body === `web on ${sym.name}` && path.startsWith('relay-') && left.length === 0
    return {
      detail: `helm install (only relay.announce) -> all Ready in ${readyMs} ms; pod on the cone node got "${body}" from web.shop.svc.cluster.local over ${path}; ` +
        `helm uninstall: ${left.length === 0 ? 'nothing of the mesh left on 3 nodes' : `left ${left.join('; ')}`}`,
      ok
    }
  } finally {
    await cluster?.stop()
    await lab?.teardown()
  }
}
