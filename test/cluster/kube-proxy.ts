// The real kube-proxy (iptables mode) on a test-cluster node, as kubeadm runs it: it gives every
// node the kubernetes Service (10.96.0.1:443 -> the apiserver's advertised address), which is
// how a pod's in-cluster client (the agent's, with no apiServer set) reaches the API. It also
// programs every other Service, as on a user's cluster: the mesh's own hooks sit above
// kube-proxy's in nat PREROUTING/OUTPUT, so traffic to a remote Service goes through the mesh
// (kube-proxy would DNAT it to a pod IP this node cannot route to).
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Lab, LabHost, LabProcess } from '../lab/lab.ts'
import { CONTROL_PLANE_BIN } from '../controlplane/harness.ts'

export interface KubeProxyOptions {
  /** kubeconfig with the node-proxier identity, its server reachable from the node's namespace */
  kubeconfig: string
  nodeName: string
  nodeIp: string
  /** the pod ranges of all nodes (kube-proxy masquerades traffic from outside them) */
  clusterCidr: string
  dir: string
}

/** KubeProxyConfiguration: iptables mode, no sysctl writes the host namespace would feel. */
export function kubeProxyConfig (o: KubeProxyOptions): string {
  return [
    'apiVersion: kubeproxy.config.k8s.io/v1alpha1',
    'kind: KubeProxyConfiguration',
    `clientConnection: {kubeconfig: ${JSON.stringify(o.kubeconfig)}}`,
    'mode: iptables',
    `hostnameOverride: ${JSON.stringify(o.nodeName)}`,
    `bindAddress: ${o.nodeIp}`,
    `clusterCIDR: ${o.clusterCidr}`,
    // per-namespace ports, but keep them on loopback of the node's namespace
    'healthzBindAddress: 127.0.0.1:10256',
    'metricsBindAddress: 127.0.0.1:10249',
    // nf_conntrack_max is host-wide: leave it alone (0 = do not set)
    'conntrack: {maxPerCore: 0, min: 0}',
    // no route_localnet sysctl for NodePorts on 127.0.0.1
    'iptables: {localhostNodePorts: false, syncPeriod: 30s, minSyncPeriod: 1s}',
    ''
  ].join('\n')
}

export async function startKubeProxy (lab: Lab, host: LabHost, o: KubeProxyOptions): Promise<LabProcess> {
  const config = join(o.dir, 'kube-proxy.yaml')
  await writeFile(config, kubeProxyConfig(o))
  return lab.spawn(host, [join(CONTROL_PLANE_BIN, 'kube-proxy'), `--config=${config}`, '--v=1'],
    { hostMounts: true, logFile: join(o.dir, 'kube-proxy.log') })
}
