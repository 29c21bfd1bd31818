// Pure renderers of one test-cluster node's config files: containerd (its own root, state,
// sockets, CNI dirs and pinned sandbox image, so several containerds share one host), the CNI
// network (bridge + host-local on the node's pod range) and the KubeletConfiguration.
import { join } from 'node:path'

export interface NodePaths {
  /** the node's directory; everything the node writes lives below it */
  dir: string
  containerdSock: string
  cniConfDir: string
  kubeletRoot: string
}

export function nodePaths (dir: string): NodePaths {
  return {
    dir,
    containerdSock: join(dir, 'containerd.sock'),
    cniConfDir: join(dir, 'cni/net.d'),
    kubeletRoot: join(dir, 'kubelet')
  }
}

const q = (s: string): string => `'${s.replace(/'/g, '')}'`

export function containerdConfig (p: NodePaths, opts: { sandboxImage: string, runc: string, cniBinDir: string }): string {
  const rt = "plugins.'io.containerd.cri.v1.runtime'"
  return [
    'version = 3',
    `root = ${q(join(p.dir, 'containerd/root'))}`,
    `state = ${q(join(p.dir, 'containerd/state'))}`,
    'imports = []',
    '[grpc]',
    `  address = ${q(p.containerdSock)}`,
    '[ttrpc]',
    `  address = ${q(p.containerdSock + '.ttrpc')}`,
    // The defaults are host-global paths another containerd (or the host's) would share.
    "[plugins.'io.containerd.nri.v1.nri']",
    '  disable = true',
    "[plugins.'io.containerd.internal.v1.opt']",
    `  path = ${q(join(p.dir, 'containerd/opt'))}`,
    "[plugins.'io.containerd.shim.v1.manager']",
    `  socket_dir = ${q(join(p.dir, 's'))}`,
    "[plugins.'io.containerd.cri.v1.images']",
    "  snapshotter = 'overlayfs'",
    // pinned: the kubelet's image GC never removes it
    "  [plugins.'io.containerd.cri.v1.images'.pinned_images]",
    `    sandbox = ${q(opts.sandboxImage)}`,
    `[${rt}]`,
    '  cdi_spec_dirs = []',
    // pod network namespaces below the node's state dir, not in the host's /run/netns
    '  netns_mounts_under_state_dir = true',
    // never below containerd's own: lowering it needs CAP_SYS_RESOURCE, which CI sandboxes drop
    '  restrict_oom_score_adj = true',
    `  [${rt}.containerd]`,
    "    default_runtime_name = 'runc'",
    `    [${rt}.containerd.runtimes.runc]`,
    "      runtime_type = 'io.containerd.runc.v2'",
    `      [${rt}.containerd.runtimes.runc.options]`,
    `        BinaryName = ${q(opts.runc)}`,
    `        Root = ${q(join(p.dir, 'runc'))}`,
    '        SystemdCgroup = false',
    `  [${rt}.cni]`,
    `    bin_dirs = [${q(opts.cniBinDir)}]`,
    `    conf_dir = ${q(p.cniConfDir)}`,
    "[plugins.'io.containerd.grpc.v1.cri']",
    "  stream_server_address = '127.0.0.1'",
    "  stream_server_port = '0'",
    ''
  ].join('\n')
}

/** bridge + host-local on podCidr (IPAM state in the node's dir, not /var/lib/cni), portmap. */
export function cniConfig (p: NodePaths, podCidr: string): string {
  return JSON.stringify({
    cniVersion: '1.0.0',
    name: 'lab-pods', // not 'edgemesh...': the uninstall test looks for anything of the mesh by name
    plugins: [
      {
        type: 'bridge',
        bridge: 'cni0',
        isGateway: true,
        ipMasq: true,
        hairpinMode: true,
        ipam: { type: 'host-local', ranges: [[{ subnet: podCidr }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: join(p.dir, 'cni/ipam') }
      },
      { type: 'portmap', capabilities: { portMappings: true } }
    ]
  }, null, 2) + '\n'
}

export interface KubeletConfigOptions {
  nodeIp: string
  cgroupRoot: string
  clusterDns: string
  clientCaFile: string
}

/** YAML is a superset of JSON: the KubeletConfiguration as JSON. */
export function kubeletConfig (p: NodePaths, o: KubeletConfigOptions): string {
  return JSON.stringify({
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    failCgroupV1: false,
    failSwapOn: false,
    cgroupDriver: 'cgroupfs',
    cgroupRoot: o.cgroupRoot,
    cgroupsPerQOS: true,
    containerRuntimeEndpoint: `unix://${p.containerdSock}`,
    clusterDNS: [o.clusterDns],
    clusterDomain: 'cluster.local',
    address: o.nodeIp,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    healthzPort: 10248,
    // the apiserver never reaches the kubelet (edge): no client needs to authenticate to it
    authentication: { anonymous: { enabled: false }, webhook: { enabled: false }, x509: { clientCAFile: o.clientCaFile } },
    authorization: { mode: 'AlwaysAllow' },
    // a busy CI disk or a small VM must not evict the test's pods
    evictionHard: { 'memory.available': '1Mi', 'nodefs.available': '1%', 'nodefs.inodesFree': '1%', 'imagefs.available': '1%' },
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    podLogsDir: join(p.dir, 'pod-logs'),
    volumePluginDir: join(p.dir, 'volume-plugins'),
    serializeImagePulls: false,
    registerNode: true,
    rotateCertificates: false,
    resolvConf: '/etc/resolv.conf',
    // more frequent status so "Ready" shows quickly; ConfigMap/Secret changes land quickly
    nodeStatusUpdateFrequency: '4s',
    syncFrequency: '10s',
    fileCheckFrequency: '10s',
    protectKernelDefaults: false
  }, null, 2) + '\n'
}

/** kubeconfig with a client certificate (the kubelet's system:node:<name> identity). */
export function certKubeconfig (server: string, caFile: string, certFile: string, keyFile: string): string {
  return [
    'apiVersion: v1', 'kind: Config',
    `clusters: [{name: test, cluster: {server: "${server}", certificate-authority: "${caFile}"}}]`,
    `users: [{name: user, user: {client-certificate: "${certFile}", client-key: "${keyFile}"}}]`,
    'contexts: [{name: test, context: {cluster: test, user: user}}]',
    'current-context: test', ''
  ].join('\n')
}
