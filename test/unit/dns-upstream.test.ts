// The forwarder's pure helpers: which resolv.conf nameservers become upstreams (never this
// server itself), and where the TTLs of an upstream answer are (so cached answers count down).
import { describe, expect, it } from 'vitest'
import { parseResolvConf, ttlOffsets } from '../../agent/dns/upstream.ts'
import { encodeQuery, encodeResponse, parseQuery, Query, TYPE } from '../../agent/dns/wire.ts'

describe('parseResolvConf', () => {
  it('takes IPv4 nameservers in order, once, without our own address, comments or options', () => {
    const text = [
      '# generated', 'search default.svc.cluster.local svc.cluster.local', 'options ndots:5',
      'nameserver 10.0.0.2', 'nameserver 169.254.96.16   # that is us', 'nameserver fd00::53', 'nameserver 10.0.0.2', ' nameserver 8.8.8.8 ; public', 'nameserver 0.0.0.0'
    ].join('\n')
    expect(parseResolvConf(text, ['169.254.96.16'])).toEqual([{ host: '10.0.0.2', port: 53 }, { host: '8.8.8.8', port: 53 }])
    expect(parseResolvConf('')).toEqual([])
  })
})

describe('ttlOffsets', () => {
  it('finds every TTL except the OPT record\'s, and survives truncation', () => {
    const q = new Query()
    const msg = encodeQuery({ id: 7, name: 'web.shop.svc.cluster.local', type: TYPE.A, edns: {} })
    expect(parseQuery(msg, q)).toBe(q)
    const resp = encodeResponse(q, {
      rcode: 0,
      answers: [{ name: 'web.shop.svc.cluster.local', type: TYPE.A, ttl: 30, data: '10.96.0.5' }, { name: 'web.shop.svc.cluster.local', type: TYPE.A, ttl: 40, data: '10.96.0.6' }],
      authority: [{ name: 'cluster.local', type: TYPE.SOA, ttl: 50, data: { mname: 'ns.dns.cluster.local', rname: 'hostmaster.cluster.local', serial: 1, refresh: 7200, retry: 1800, expire: 86400, minimum: 5 } }]
    }, { maxSize: 65535 })
    const offs = ttlOffsets(resp)
    expect(offs.map((o) => resp.readUInt32BE(o))).toEqual([30, 40, 50])
    // a cut-off message yields only TTLs that lie inside it, and a prefix of the full list
    for (let cut = 0; cut < resp.length; cut++) {
      const part = ttlOffsets(resp.subarray(0, cut))
      expect(part.every((o) => o + 4 <= cut)).toBe(true)
      expect(part).toEqual(offs.slice(0, part.length))
    }
    expect(ttlOffsets(resp.subarray(0, 20))).toEqual([])
  })
})
