// A mesh in the NAT lab backed by a real control plane: etcd + kube-apiserver on the host's
// loopback, reachable from the lab at the relay's public address; the chart's RBAC and
// admission policy installed; every agent on its own pod-bound ServiceAccount token, finding
// peers through the Lease registry (no peers file).
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Lab } from './lab.ts'
import { Mesh, type MeshOptions } from './mesh.ts'
import { exposeToLab } from './expose.ts'
import { startControlPlane, type ControlPlane } from '../controlplane/harness.ts'
import { agentToken, apiRequest, installMeshRbac, type InstallResult } from '../controlplane/cluster.ts'

export const API_IP = '198.51.100.10' // relay0: the cloud node with a public address
export const API_PORT = 6443

export interface K8sMesh {
  cp: ControlPlane
  mesh: Mesh
  rbac: InstallResult
  dir: string
  /** an admin API call that throws on a non-2xx answer */
  admin(method: string, path: string, body?: unknown, contentType?: string): Promise<any>
  stop(): Promise<void>
}

export type AdminRequest = (method: string, path: string, body?: unknown, contentType?: string) => Promise<any>

/** `beforeAgents` runs against the API before any agent starts (CRDs, objects agents must see at start). */
export async function startK8sMesh (lab: Lab, opts: Omit<MeshOptions, 'peersFile'> & { beforeAgents?: (admin: AdminRequest) => Promise<void> }): Promise<K8sMesh> {
  const dir = await mkdtemp(join(tmpdir(), `edgemesh-k8s-${lab.prefix}`))
  let cp: ControlPlane | undefined
  let exposed: { close: () => Promise<void> } | undefined
  let mesh: Mesh | undefined
  const stop = async (): Promise<void> => {
    await mesh?.stop()
    await exposed?.close()
    await cp?.stop()
    await rm(dir, { recursive: true, force: true })
  }
  try {
    cp = await startControlPlane({ extraSans: [API_IP] })
    const api = cp
    const rbac = await installMeshRbac(api)
    exposed = await exposeToLab(lab, 'relay0', { ip: API_IP, port: API_PORT }, { host: '127.0.0.1', port: api.port })
    const kubeconfigs = new Map<string, string>()
    for (const host of opts.agents) {
      const file = join(dir, `${host}.kubeconfig`)
      await api.writeKubeconfig(file, await agentToken(api, { nodeName: `edge-${host}` }), `https://${API_IP}:${API_PORT}`)
      kubeconfigs.set(host, file)
    }
    const admin: AdminRequest = async (method, path, body, contentType) => {
      const r = await apiRequest(api, api.adminToken, method, path, body, contentType)
      if (r.status < 200 || r.status > 299) throw new Error(`${method} ${path}: ${r.status} ${r.text.slice(0, 300)}`)
      return r.body
    }
    await opts.beforeAgents?.(admin)
    mesh = await Mesh.start(lab, {
      ...opts,
      peersFile: false,
      agentConfig: (host, relays) => ({
        kubernetes: { kubeconfig: kubeconfigs.get(host), namespace: 'edgemesh', snapshotFile: join(dir, `${host}-catalog.json`) },
        ...(opts.agentConfig?.(host, relays) ?? {})
      })
    })
    return { cp: api, mesh, rbac, dir, admin, stop }
  } catch (err) {
    await stop()
    throw err
  }
}
