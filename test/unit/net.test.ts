import { describe, expect, it } from 'vitest'
import { ipv4ToInt, isPrivateIPv4, sameSubnet, VIRTUAL_INTERFACE } from '../../shared/net.ts'

describe('IPv4 helpers', () => {
  it('ipv4ToInt is big-endian and unsigned', () => {
    expect(ipv4ToInt('0.0.0.1')).toBe(1)
    expect(ipv4ToInt('1.0.0.0')).toBe(16_777_216)
    expect(ipv4ToInt('255.255.255.255')).toBe(4_294_967_295)
  })

  it('sameSubnet compares under the mask', () => {
    expect(sameSubnet('10.1.0.10', '10.1.0.200', '255.255.255.0')).toBe(true)
    expect(sameSubnet('10.1.0.10', '10.2.0.10', '255.255.255.0')).toBe(false)
    expect(sameSubnet('10.1.0.10', '10.2.0.10', '255.0.0.0')).toBe(true)
  })

  it('private ranges: RFC 1918, CGNAT, link-local, loopback', () => {
    for (const ip of ['10.0.0.1', '172.16.5.4', '172.31.255.255', '192.168.1.1', '100.64.0.1', '100.127.255.254', '169.254.9.9', '127.0.0.1']) {
      expect(isPrivateIPv4(ip), ip).toBe(true)
    }
    for (const ip of ['172.32.0.1', '100.128.0.1', '8.8.8.8', '198.51.100.10', '203.0.113.7', '11.0.0.1']) {
      expect(isPrivateIPv4(ip), ip).toBe(false)
    }
  })

  it('container bridges and overlay devices are not offered to peers; LAN interfaces are', () => {
    for (const name of ['edgemesh0', 'docker0', 'br-0123456789ab', 'cni0', 'cbr0', 'flannel.1', 'cali1a2b3c', 'cilium_host', 'lxcbr0', 'kube-ipvs0', 'kube-bridge', 'virbr0', 'veth12ab', 'vxlan.calico', 'tunl0', 'weave', 'podman0']) {
      expect(VIRTUAL_INTERFACE.test(name), name).toBe(true)
    }
    for (const name of ['eth0', 'ens3', 'enp0s31f6', 'wlan0', 'bond0', 'br0', 'br-lan', 'wg0', 'tailscale0']) {
      expect(VIRTUAL_INTERFACE.test(name), name).toBe(false)
    }
  })
})
