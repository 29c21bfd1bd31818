// A fake Kubernetes apiserver on loopback for in-process agents: LIST answers from fixed
// collections, WATCH streams stay open without events; it can hang (hold every request until the
// mode changes), be down (503) or up. Enough for the catalog's reflectors to sync.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { writeFile } from 'node:fs/promises'
import { stringify } from 'yaml'

/** The apiserver's answers: hang (hold every request until the mode changes), down (503), up. */
export type ApiMode = 'hang' | 'down' | 'up'

export const kubernetesService = (clusterIP = '10.96.0.1'): unknown => ({
  metadata: { namespace: 'default', name: 'kubernetes', resourceVersion: '5' },
  spec: { type: 'ClusterIP', clusterIP, clusterIPs: [clusterIP], ports: [{ name: 'https', port: 443, protocol: 'TCP', targetPort: 6443 }] }
})

/** Collection path -> items. Paths the agent's catalog lists: services, endpointslices, nodes, the peer Leases of `namespace`. */
export function catalogLists (opts: { services: unknown[], endpointSlices?: unknown[], namespace?: string }): Record<string, unknown[]> {
  return {
    '/api/v1/services': opts.services,
    '/apis/discovery.k8s.io/v1/endpointslices': opts.endpointSlices ?? [],
    '/api/v1/nodes': [],
    [`/apis/coordination.k8s.io/v1/namespaces/${opts.namespace ?? 'edgemesh'}/leases`]: []
  }
}

export class FakeKubeApi {
  mode: ApiMode = 'down'
  readonly server: Server
  private readonly held: Array<() => void> = []
  private readonly watches = new Set<ServerResponse>()
  private readonly lists: Record<string, unknown[]>

  constructor (lists: Record<string, unknown[]>) {
    this.lists = lists
    this.server = createServer((req, res) => { this.handle(req, res) })
  }

  /** Listens on 127.0.0.1 and writes a kubeconfig for it; returns the kubeconfig's path. */
  async start (kubeconfig: string): Promise<string> {
    await new Promise<void>((resolve) => { this.server.listen(0, '127.0.0.1', resolve) })
    const url = `http://127.0.0.1:${(this.server.address() as { port: number }).port}`
    await writeFile(kubeconfig, stringify({
      apiVersion: 'v1', kind: 'Config', 'current-context': 'c',
      clusters: [{ name: 'k', cluster: { server: url } }],
      users: [{ name: 'u', user: { token: 'x' } }],
      contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }]
    }))
    return kubeconfig
  }

  setMode (mode: ApiMode): void {
    this.mode = mode
    for (const answer of this.held.splice(0)) answer()
  }

  private handle (req: IncomingMessage, res: ServerResponse): void {
    if (this.mode === 'hang') { this.held.push(() => { this.handle(req, res) }); return }
    if (this.mode === 'down') { res.writeHead(503, { 'content-type': 'application/json' }).end('{"kind":"Status","code":503}'); return }
    const url = new URL(req.url ?? '/', 'http://x')
    const items = this.lists[url.pathname]
    if (req.method !== 'GET' || items == null) { res.writeHead(404, { 'content-type': 'application/json' }).end('{"kind":"Status","code":404,"reason":"NotFound"}'); return }
    if (url.searchParams.get('watch') != null) {
      // an open watch with no events; closed by close()
      res.writeHead(200, { 'content-type': 'application/json' })
      res.write('')
      this.watches.add(res)
      res.on('close', () => { this.watches.delete(res) })
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'List', apiVersion: 'v1', metadata: { resourceVersion: '10' }, items }))
  }

  async close (): Promise<void> {
    for (const w of this.watches) w.destroy()
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => { this.server.close(() => { resolve() }) })
  }
}
