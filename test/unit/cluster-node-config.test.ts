// The test cluster's pure parts (test/cluster/node-config.ts, node.ts): every path a node's
// containerd, CNI and kubelet write is below the node's own directory (several nodes share one
// host), image names as the CRI looks them up, and which mounts stop() must undo.
import { describe, expect, it } from 'vitest'
import { cniConfig, containerdConfig, kubeletConfig, nodePaths } from '../cluster/node-config.ts'
import { mountsBelow, normalizeImageRef } from '../cluster/node.ts'

const p = nodePaths('/tmp/emc-em1234-abcdef/a1')

describe('test cluster node config', () => {
  it('containerd: root, state, sockets, shim sockets, opt, runc root and CNI conf below the node dir; NRI off; sandbox pinned', () => {
    const toml = containerdConfig(p, { sandboxImage: 'localhost/edgemesh-test/pause:abc', runc: '/usr/sbin/runc', cniBinDir: '/usr/lib/cni' })
    const paths = [...toml.matchAll(/'(\/[^']*)'/g)].map(m => m[1] as string)
    const outside = paths.filter(x => !x.startsWith(p.dir + '/'))
    expect(outside.sort()).toEqual(['/usr/lib/cni', '/usr/sbin/runc'])
    expect(toml).toContain(`address = '${p.dir}/containerd.sock'`)
    expect(toml).toMatch(/\[plugins\.'io\.containerd\.nri\.v1\.nri'\]\n {2}disable = true/)
    expect(toml).toMatch(/pinned_images\]\n {4}sandbox = 'localhost\/edgemesh-test\/pause:abc'/)
    expect(toml).toContain('restrict_oom_score_adj = true')
    expect(toml).toContain('netns_mounts_under_state_dir = true')
    expect(toml).toContain('imports = []')
  })

  it('CNI: bridge with the node range, IPAM state in the node dir', () => {
    const c = JSON.parse(cniConfig(p, '10.200.3.0/24'))
    const bridge = c.plugins.find((x: any) => x.type === 'bridge')
    expect(bridge.ipam.ranges).toEqual([[{ subnet: '10.200.3.0/24' }]])
    expect(bridge.ipam.dataDir).toBe(`${p.dir}/cni/ipam`)
    expect(bridge.isGateway && bridge.ipMasq).toBe(true)
  })

  it('kubelet: cgroup v1 allowed, own cgroup root, runtime socket and log dirs, cluster DNS, no evictions', () => {
    const k = JSON.parse(kubeletConfig(p, { nodeIp: '10.1.0.10', cgroupRoot: '/edgemesh-em1234-a1', clusterDns: '169.254.96.16', clientCaFile: '/x/ca.crt' }))
    expect(k).toMatchObject({
      failCgroupV1: false,
      cgroupDriver: 'cgroupfs',
      cgroupRoot: '/edgemesh-em1234-a1',
      containerRuntimeEndpoint: `unix://${p.dir}/containerd.sock`,
      clusterDNS: ['169.254.96.16'],
      clusterDomain: 'cluster.local',
      podLogsDir: `${p.dir}/pod-logs`,
      volumePluginDir: `${p.dir}/volume-plugins`
    })
    expect(k.staticPodPath).toBeUndefined()
    expect(Object.values(k.evictionHard).every(v => v === '1%' || v === '1Mi')).toBe(true)
  })

  it('image references are named as containerd stores them', () => {
    expect(normalizeImageRef('hello:v1')).toBe('docker.io/library/hello:v1')
    expect(normalizeImageRef('edgemesh/agent')).toBe('docker.io/edgemesh/agent:latest')
    expect(normalizeImageRef('localhost/edgemesh:dev')).toBe('localhost/edgemesh:dev')
    expect(normalizeImageRef('registry.example:5000/a/b:1')).toBe('registry.example:5000/a/b:1')
    expect(normalizeImageRef('registry.example:5000/a/b')).toBe('registry.example:5000/a/b:latest')
    expect(normalizeImageRef('x@sha256:abcd')).toBe('x@sha256:abcd')
  })

  it('mountsBelow: the dir and mounts under it, deepest first, octal escapes decoded, siblings with the same prefix excluded', () => {
    const info = [
      '22 1 8:0 / / rw - ext4 /dev/vda rw',
      '30 22 0:50 / /tmp/n1/kubelet/pods/u/volumes/kubernetes.io~projected/kube-api-access-x rw - tmpfs tmpfs rw',
      '31 22 0:51 / /tmp/n1/containerd/state/netns/cni-1 rw - nsfs nsfs rw',
      '32 22 0:52 / /tmp/n1/with\\040space rw - tmpfs tmpfs rw',
      '33 22 0:53 / /tmp/n10/other rw - tmpfs tmpfs rw',
      ''
    ].join('\n')
    expect(mountsBelow('/tmp/n1', info)).toEqual([
      '/tmp/n1/kubelet/pods/u/volumes/kubernetes.io~projected/kube-api-access-x',
      '/tmp/n1/containerd/state/netns/cni-1',
      '/tmp/n1/with space'
    ])
  })
})
