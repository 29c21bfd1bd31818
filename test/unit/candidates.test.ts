import { describe, expect, it } from 'vitest'
import { isDialableTcpCandidate, isSameSite, tcpHostOf } from '../../agent/tunnel/candidates.ts'

// our host on site a: 10.1.0.10/24, behind public 198.51.100.20
const local = [{ address: '10.1.0.10', netmask: '255.255.255.0' }]
const otherSite = { local, sameSite: false }
const ourSite = { local, sameSite: true }

describe('direct TCP candidate filter', () => {
  it('a private address on one of our subnets is dialled; one of another site is not', () => {
    expect(isDialableTcpCandidate('10.1.0.11', otherSite)).toBe(true)
    expect(isDialableTcpCandidate('10.2.0.10', otherSite)).toBe(false)
    expect(isDialableTcpCandidate('192.168.1.5', otherSite)).toBe(false)
    expect(isDialableTcpCandidate('172.20.0.5', otherSite)).toBe(false)
    expect(isDialableTcpCandidate('100.64.3.3', otherSite)).toBe(false)
  })

  it('behind the same public IP (one site, routed subnets) a private address off our subnets is dialled', () => {
    expect(isDialableTcpCandidate('10.1.5.20', ourSite)).toBe(true)
    expect(isDialableTcpCandidate('10.1.5.20', otherSite)).toBe(false)
  })

  it('public addresses are dialled from anywhere', () => {
    expect(isDialableTcpCandidate('198.51.100.21', otherSite)).toBe(true)
    expect(isDialableTcpCandidate('203.0.113.7', { local: [], sameSite: false })).toBe(true)
  })

  it('never: our own address, link-local (169.254.96.16 on every agent), loopback, this-network, multicast, IPv6, garbage', () => {
    for (const ctx of [otherSite, ourSite]) {
      for (const host of ['10.1.0.10', '169.254.96.16', '169.254.1.1', '127.0.0.1', '0.0.0.0', '224.0.0.251', '255.255.255.255', 'fe80::1', '::1', '10.1.0', '10.1.0.256', 'example.com', '']) {
        expect(isDialableTcpCandidate(host, ctx), `${host} sameSite=${ctx.sameSite}`).toBe(false)
      }
    }
  })

  it('a link-local subnet of our own does not make link-local candidates dialable', () => {
    expect(isDialableTcpCandidate('169.254.96.17', { local: [{ address: '169.254.96.16', netmask: '255.255.0.0' }], sameSite: true })).toBe(false)
  })
})

describe('same site: the peer observed at our public IP by the same relay', () => {
  const peer = (host: string): Array<{ proto: 'udp' | 'tcp', host: string, port: number }> =>
    [{ proto: 'udp', host, port: 4003 }, { proto: 'udp', host: '10.1.0.11', port: 4003 }, { proto: 'tcp', host: '10.1.0.11', port: 4004 }]
  it('equal public IPs (any port: the NAT maps each host to its own) are one site', () => {
    expect(isSameSite(peer('198.51.100.20'), { host: '198.51.100.20' })).toBe(true)
  })
  it('another public IP, an unregistered us, or no observed endpoint first is not', () => {
    expect(isSameSite(peer('198.51.100.21'), { host: '198.51.100.20' })).toBe(false)
    expect(isSameSite(peer('198.51.100.20'), null)).toBe(false)
    expect(isSameSite([], { host: '198.51.100.20' })).toBe(false)
    expect(isSameSite([{ proto: 'tcp', host: '198.51.100.20' }], { host: '198.51.100.20' })).toBe(false)
  })
})

describe('tcpHostOf', () => {
  it('takes the host of /ip4/<host>/tcp/<port> multiaddrs only', () => {
    expect(tcpHostOf('/ip4/10.1.0.11/tcp/4004')).toBe('10.1.0.11')
    expect(tcpHostOf('/ip4/10.1.0.11/tcp/4004/p2p/12D3KooW')).toBe('10.1.0.11')
    expect(tcpHostOf('/ip6/::1/tcp/4004')).toBeUndefined()
    expect(tcpHostOf('/dns4/a.example/tcp/4004')).toBeUndefined()
    expect(tcpHostOf('/ip4/10.1.0.11/udp/4003')).toBeUndefined()
  })
})
