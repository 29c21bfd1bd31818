// Unit tests for what the ClusterIP proxy programs from a catalog snapshot (agent/proxy/plan.ts):
// which service ports, which endpoints the kernel reaches directly and which go through the
// tunnel to which node, and the load-balancing policy. Snapshots come from a real CatalogStore.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { EndpointInfo, EndpointPort, EndpointSliceInfo, ServiceInfo } from '../../agent/catalog/model.ts'
import { CatalogStore, type CatalogSnapshot } from '../../agent/catalog/store.ts'
import { parseDestinationRule, type DestinationRuleInfo, type Policy } from '../../agent/proxy/lb.ts'
import {
  agentEndpoints, inCidrs, ipToInt, parseCidr, planAll, planService, samePlan, type PlanOptions, type ServicePortPlan
} from '../../agent/proxy/plan.ts'

const THIS_NODE = 'edge-1'
const OPTS: PlanOptions = { nodeName: THIS_NODE, directCidrs: [], destinationRules: [], clusterDomain: 'cluster.local' }

const HTTP: ServiceInfo['ports'][number] = { name: 'http', port: 80, protocol: 'TCP', targetPort: 'http' }
const HTTP_SLICE_PORT: EndpointPort = { name: 'http', port: 8080, protocol: 'TCP' }

function service (name: string, over: Partial<ServiceInfo> = {}): ServiceInfo {
  return {
    namespace: 'default', name, resourceVersion: '1', type: 'ClusterIP', clusterIPs: ['10.96.0.10'], headless: false,
    ports: [HTTP], sessionAffinity: 'None', affinityTimeoutSeconds: 10_800, publishNotReadyAddresses: false, ...over
  }
}

function endpoint (ip: string | string[], nodeName?: string, ready = true): EndpointInfo {
  const ep: EndpointInfo = { addresses: Array.isArray(ip) ? ip : [ip], ready, serving: ready, terminating: false }
  if (nodeName != null) ep.nodeName = nodeName
  return ep
}

function slice (serviceName: string, name: string, endpoints: EndpointInfo[], ports: EndpointPort[] = [HTTP_SLICE_PORT], addressType = 'IPv4'): EndpointSliceInfo {
  return { namespace: 'default', name, resourceVersion: '1', serviceName, addressType, ports, endpoints }
}

function snapshotOf (services: ServiceInfo[], slices: EndpointSliceInfo[] = []): CatalogSnapshot {
  const store = new CatalogStore()
  store.setSource('api')
  for (const s of services) store.upsert('services', s)
  for (const s of slices) store.upsert('endpointSlices', s)
  return store.commit()!.snapshot
}

/** The plan of a snapshot that must hold exactly one service port. */
function onlyPort (snapshot: CatalogSnapshot, opts: Partial<PlanOptions> = {}): ServicePortPlan {
  const { ports } = planAll(snapshot, { ...OPTS, ...opts })
  expect(ports).toHaveLength(1)
  return ports[0]!
}

const rule = (host: string, policy: Policy, namespace = 'default', name = 'lb'): DestinationRuleInfo => ({ namespace, name, host, policy })

describe('planAll: endpoints', () => {
  it('plans a ClusterIP port whose endpoints are on this node as direct', () => {
    const snap = snapshotOf([service('web')], [slice('web', 'web-a', [endpoint('10.244.1.3', THIS_NODE), endpoint('10.244.1.2', THIS_NODE)])])
    expect(planAll(snap, OPTS)).toEqual({
      ports: [{
        id: '10.96.0.10:80/TCP', key: 'default/web', namespace: 'default', name: 'web', portName: 'http',
        clusterIP: '10.96.0.10', port: 80, protocol: 'TCP',
        direct: ['10.244.1.2:8080', '10.244.1.3:8080'], remote: new Map(),
        policy: { kind: 'round-robin' }, agentOnly: false, affinitySeconds: 0
      }],
      unroutable: 0
    })
  })

  it('maps endpoints on other nodes to their node, behind the tunnel', () => {
    const snap = snapshotOf([service('web')], [slice('web', 'web-a', [endpoint('10.244.2.5', 'edge-2'), endpoint('10.244.3.7', 'edge-3'), endpoint('10.244.1.2', THIS_NODE)])])
    const p = onlyPort(snap)
    expect(p.direct).toEqual(['10.244.1.2:8080'])
    expect(p.remote).toEqual(new Map([['10.244.2.5:8080', 'edge-2'], ['10.244.3.7:8080', 'edge-3']]))
  })

  it('plans an endpoint inside a direct CIDR as direct, whatever its node', () => {
    const snap = snapshotOf([service('camera')], [slice('camera', 'camera-a', [
      endpoint('192.168.8.20', 'edge-2'), endpoint('192.168.9.20', 'edge-2'), endpoint('10.244.2.5', 'edge-2'), endpoint('192.168.8.21')
    ])])
    const p = onlyPort(snap, { directCidrs: ['192.168.8.0/24'] })
    expect(p.direct).toEqual(['192.168.8.20:8080', '192.168.8.21:8080'])
    expect(p.remote).toEqual(new Map([['192.168.9.20:8080', 'edge-2'], ['10.244.2.5:8080', 'edge-2']]))
  })

  it('counts an endpoint without a node and outside the direct CIDRs as unroutable, and does not plan it', () => {
    const snap = snapshotOf([service('web')], [slice('web', 'web-a', [endpoint('10.244.9.9'), endpoint('10.244.9.8', ''), endpoint('10.244.2.5', 'edge-2')])])
    const { ports, unroutable } = planAll(snap, { ...OPTS, directCidrs: ['192.168.8.0/24'] })
    expect(unroutable).toBe(2)
    expect(ports[0]!.direct).toEqual([])
    expect(ports[0]!.remote).toEqual(new Map([['10.244.2.5:8080', 'edge-2']]))
  })

  it('skips endpoints that are not ready, even when serving or on this node', () => {
    const notReadyButServing: EndpointInfo = { addresses: ['10.244.1.9'], ready: false, serving: true, terminating: true, nodeName: THIS_NODE }
    const snap = snapshotOf([service('web')], [slice('web', 'web-a', [
      endpoint('10.244.1.2', THIS_NODE), endpoint('10.244.2.5', 'edge-2', false), endpoint('10.244.9.9', undefined, false), notReadyButServing
    ])])
    const { ports, unroutable } = planAll(snap, OPTS)
    expect(ports[0]!.direct).toEqual(['10.244.1.2:8080'])
    expect(ports[0]!.remote.size).toBe(0)
    expect(unroutable).toBe(0)
  })

  it('skips IPv6 slices and IPv6 addresses, and uses the IPv4 ClusterIP of a dual-stack Service', () => {
    const snap = snapshotOf([service('web', { clusterIPs: ['fd00:96::10', '10.96.0.10'] })], [
      slice('web', 'web-v6', [endpoint('fd00:244::5', THIS_NODE), endpoint('fd00:244::6', 'edge-2')], [HTTP_SLICE_PORT], 'IPv6'),
      slice('web', 'web-v4', [endpoint(['10.244.1.2', 'fd00:244::7'], THIS_NODE), endpoint('fd00:244::8', 'edge-2')])
    ])
    const p = onlyPort(snap)
    expect(p.id).toBe('10.96.0.10:80/TCP')
    expect(p.clusterIP).toBe('10.96.0.10')
    expect(p.direct).toEqual(['10.244.1.2:8080'])
    expect(p.remote.size).toBe(0)
  })

  it('plans nothing for an IPv6-only Service', () => {
    const snap = snapshotOf([service('web', { clusterIPs: ['fd00:96::10'] })], [slice('web', 'web-a', [endpoint('10.244.1.2', THIS_NODE)])])
    expect(planAll(snap, OPTS)).toEqual({ ports: [], unroutable: 0 })
  })

  it('plans nothing for headless and ExternalName Services, even with endpoints', () => {
    const snap = snapshotOf([
      service('db', { clusterIPs: [], headless: true }),
      service('ext', { type: 'ExternalName', clusterIPs: [], externalName: 'example.org' }),
      // inconsistent on purpose: the flags win over a leftover ClusterIP
      service('odd', { clusterIPs: ['10.96.0.99'], headless: true })
    ], [slice('db', 'db-a', [endpoint('10.244.9.9')]), slice('ext', 'ext-a', [endpoint('10.244.1.2', THIS_NODE)]), slice('odd', 'odd-a', [endpoint('10.244.1.3', THIS_NODE)])])
    expect(planAll(snap, OPTS)).toEqual({ ports: [], unroutable: 0 })
  })

  it('plans a Service without endpoints, with empty direct and remote', () => {
    const p = onlyPort(snapshotOf([service('web')]))
    expect([p.id, p.direct, p.remote]).toEqual(['10.96.0.10:80/TCP', [], new Map()])
  })

  it('lists an endpoint both local and remote (two slices disagreeing) as direct only', () => {
    const snap = snapshotOf([service('web')], [
      slice('web', 'web-a', [endpoint('10.244.1.2', 'edge-2')]),
      slice('web', 'web-b', [endpoint('10.244.1.2', THIS_NODE)])
    ])
    const p = onlyPort(snap)
    expect(p.direct).toEqual(['10.244.1.2:8080'])
    expect(p.remote.size).toBe(0)
  })
})

describe('planAll: ports', () => {
  it('maps each Service port to the slice port with the same name and protocol', () => {
    const svc = service('web', {
      ports: [
        { name: 'http', port: 80, protocol: 'TCP', targetPort: 'http' },
        { name: 'metrics', port: 9090, protocol: 'TCP', targetPort: 'prom' },
        { name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 },
        { name: 'admin', port: 8081, protocol: 'TCP', targetPort: 8081 }
      ]
    })
    const snap = snapshotOf([svc], [slice('web', 'web-a', [endpoint('10.244.1.2', THIS_NODE), endpoint('10.244.2.5', 'edge-2')], [
      { name: 'metrics', port: 9100, protocol: 'TCP' },
      { name: 'http', port: 8080, protocol: 'TCP' },
      { name: 'dns', port: 5353, protocol: 'TCP' } // same name, other protocol: not the UDP port's
    ])])
    const byId = new Map(planAll(snap, OPTS).ports.map((p) => [p.id, p]))
    expect([...byId.keys()]).toEqual(['10.96.0.10:53/UDP', '10.96.0.10:80/TCP', '10.96.0.10:8081/TCP', '10.96.0.10:9090/TCP'])
    expect(byId.get('10.96.0.10:80/TCP')).toMatchObject({ portName: 'http', direct: ['10.244.1.2:8080'], remote: new Map([['10.244.2.5:8080', 'edge-2']]) })
    expect(byId.get('10.96.0.10:9090/TCP')).toMatchObject({ portName: 'metrics', direct: ['10.244.1.2:9100'], remote: new Map([['10.244.2.5:9100', 'edge-2']]) })
    expect(byId.get('10.96.0.10:53/UDP')).toMatchObject({ portName: 'dns', protocol: 'UDP', direct: [], remote: new Map() })
    expect(byId.get('10.96.0.10:8081/TCP')).toMatchObject({ portName: 'admin', direct: [], remote: new Map() })
  })

  it('matches an unnamed Service port to the unnamed slice port', () => {
    const svc = service('web', { ports: [{ name: '', port: 80, protocol: 'TCP', targetPort: 8080 }] })
    const p = onlyPort(snapshotOf([svc], [slice('web', 'web-a', [endpoint('10.244.1.2', THIS_NODE)], [{ name: '', port: 8080, protocol: 'TCP' }])]))
    expect([p.portName, p.direct]).toEqual(['', ['10.244.1.2:8080']])
  })

  it('takes the port of each slice: endpoints of two slices may listen on different ports', () => {
    const snap = snapshotOf([service('web')], [
      slice('web', 'web-old', [endpoint('10.244.1.2', THIS_NODE)], [{ name: 'http', port: 8080, protocol: 'TCP' }]),
      slice('web', 'web-new', [endpoint('10.244.1.3', THIS_NODE), endpoint('10.244.2.3', 'edge-2')], [{ name: 'http', port: 8081, protocol: 'TCP' }])
    ])
    const p = onlyPort(snap)
    expect(p.direct).toEqual(['10.244.1.2:8080', '10.244.1.3:8081'])
    expect(p.remote).toEqual(new Map([['10.244.2.3:8081', 'edge-2']]))
  })

  it('skips SCTP ports', () => {
    const svc = service('sig', { ports: [{ name: 'sctp', port: 3868, protocol: 'SCTP', targetPort: 3868 }, { name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }] })
    const snap = snapshotOf([svc], [slice('sig', 'sig-a', [endpoint('10.244.1.2', THIS_NODE)], [{ name: 'sctp', port: 3868, protocol: 'SCTP' }, HTTP_SLICE_PORT])])
    expect(planAll(snap, OPTS).ports.map((p) => p.id)).toEqual(['10.96.0.10:80/TCP'])
  })

  it('names ports clusterIP:port/PROTOCOL and returns them sorted by id, across Services', () => {
    const snap = snapshotOf([
      service('zeta', { clusterIPs: ['10.96.1.5'], ports: [{ name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 }] }),
      service('web', {
        clusterIPs: ['10.96.0.10'],
        ports: [
          { name: 'http', port: 80, protocol: 'TCP', targetPort: 80 }, { name: 'https', port: 443, protocol: 'TCP', targetPort: 443 },
          { name: 'dns-udp', port: 53, protocol: 'UDP', targetPort: 53 }, { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 53 }
        ]
      }),
      service('alpha', { clusterIPs: ['10.96.0.9'] })
    ])
    const { ports } = planAll(snap, OPTS)
    expect(ports.map((p) => p.id)).toEqual([
      '10.96.0.10:443/TCP', '10.96.0.10:53/TCP', '10.96.0.10:53/UDP', '10.96.0.10:80/TCP', '10.96.0.9:80/TCP', '10.96.1.5:53/UDP'
    ])
    expect(ports.map((p) => p.key)).toEqual(['default/web', 'default/web', 'default/web', 'default/web', 'default/alpha', 'default/zeta'])
  })

  it('counts an unroutable endpoint once per Service port it would serve', () => {
    const svc = service('web', { ports: [HTTP, { name: 'metrics', port: 9090, protocol: 'TCP', targetPort: 9100 }] })
    const snap = snapshotOf([svc], [slice('web', 'web-a', [endpoint('10.244.9.9')], [HTTP_SLICE_PORT, { name: 'metrics', port: 9100, protocol: 'TCP' }])])
    expect(planAll(snap, OPTS).unroutable).toBe(2)
  })

  it('planService appends the ports of one Service and returns its unroutable count', () => {
    const out: ServicePortPlan[] = []
    const s = slice('web', 'web-a', [endpoint('10.244.1.2', THIS_NODE), endpoint('10.244.9.9')])
    expect(planService(service('web'), [s], OPTS, [], out)).toBe(1)
    expect(planService(service('api', { clusterIPs: ['10.96.0.11'] }), [], OPTS, [], out)).toBe(0)
    expect(out.map((p) => [p.id, p.direct])).toEqual([['10.96.0.10:80/TCP', ['10.244.1.2:8080']], ['10.96.0.11:80/TCP', []]])
  })
})

describe('planAll: partition property', () => {
  const nodes = [THIS_NODE, 'edge-2', 'edge-3', undefined, ''] as const
  const endpointArb = fc.record({ ip: fc.ipV4(), node: fc.constantFrom(...nodes), ready: fc.boolean() })

  it('puts every ready endpoint in exactly one of direct, remote and unroutable', () => {
    fc.assert(fc.property(fc.uniqueArray(endpointArb, { selector: (e) => e.ip, maxLength: 30 }), fc.constantFrom([], ['10.0.0.0/8'], ['0.0.0.0/1', '192.168.0.0/16']), (eps, directCidrs) => {
      const snap = snapshotOf([service('web')], [slice('web', 'web-a', eps.map((e) => endpoint(e.ip, e.node, e.ready)))])
      const { ports, unroutable } = planAll(snap, { ...OPTS, directCidrs })
      const cidrs = directCidrs.map(parseCidr)
      const ready = eps.filter((e) => e.ready)
      const isDirect = (e: typeof eps[number]): boolean => e.node === THIS_NODE || inCidrs(e.ip, cidrs)
      const expectedDirect = ready.filter(isDirect).map((e) => `${e.ip}:8080`).sort()
      const expectedRemote = new Map(ready.filter((e) => !isDirect(e) && e.node != null && e.node !== '').map((e) => [`${e.ip}:8080`, e.node!]))
      const p = ports[0]!
      expect(p.direct).toEqual(expectedDirect)
      expect(p.remote).toEqual(expectedRemote)
      expect(unroutable).toBe(ready.length - expectedDirect.length - expectedRemote.size)
    }), { numRuns: 300 })
  })
})

describe('planAll: policy', () => {
  it('uses ClientIP session affinity timeout as affinitySeconds, and 0 without affinity', () => {
    const snap = snapshotOf([
      service('sticky', { clusterIPs: ['10.96.0.11'], sessionAffinity: 'ClientIP', affinityTimeoutSeconds: 600 }),
      service('loose', { clusterIPs: ['10.96.0.12'], sessionAffinity: 'None', affinityTimeoutSeconds: 600 })
    ])
    expect(planAll(snap, OPTS).ports.map((p) => [p.name, p.affinitySeconds])).toEqual([['sticky', 600], ['loose', 0]])
  })

  it('defaults to round robin without a matching DestinationRule', () => {
    const p = onlyPort(snapshotOf([service('web')]), { destinationRules: [rule('api.default.svc.cluster.local', { kind: 'least-request' }), rule('web', { kind: 'random' }, 'other')] })
    expect([p.policy, p.agentOnly]).toEqual([{ kind: 'round-robin' }, false])
  })

  it.each([
    [{ kind: 'round-robin' }, false],
    [{ kind: 'random' }, false],
    [{ kind: 'least-request' }, true],
    [{ kind: 'consistent-hash', on: { header: 'x-user' } }, true],
    [{ kind: 'consistent-hash', on: { sourceIp: true } }, true]
  ] satisfies Array<[Policy, boolean]>)('takes %j from the DestinationRule; agentOnly %s', (policy, agentOnly) => {
    const p = onlyPort(snapshotOf([service('web')]), { destinationRules: [rule('web.default.svc.cluster.local', policy)] })
    expect(p.policy).toEqual(policy)
    expect(p.agentOnly).toBe(agentOnly)
  })

  it('reads rules parsed from Istio objects, against the configured cluster domain', () => {
    const dr = parseDestinationRule({
      apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: { namespace: 'default', name: 'web' },
      spec: { host: 'web.default.svc.example.org', trafficPolicy: { loadBalancer: { simple: 'LEAST_REQUEST' } } }
    })!
    const snap = snapshotOf([service('web')])
    expect(onlyPort(snap, { destinationRules: [dr], clusterDomain: 'example.org' }).policy).toEqual({ kind: 'least-request' })
    expect(onlyPort(snap, { destinationRules: [dr], clusterDomain: 'cluster.local' }).policy).toEqual({ kind: 'round-robin' })
  })

  it('applies a one-shot iterable of rules to every Service', () => {
    const snap = snapshotOf([service('a', { clusterIPs: ['10.96.0.1'] }), service('b', { clusterIPs: ['10.96.0.2'] })])
    function * rules (): Generator<DestinationRuleInfo> { yield rule('*', { kind: 'random' }, 'default', 'all') }
    expect(planAll(snap, { ...OPTS, destinationRules: rules() }).ports.map((p) => p.policy)).toEqual([{ kind: 'random' }, { kind: 'random' }])
  })
})

describe('agentEndpoints', () => {
  const snap = snapshotOf([service('web')], [slice('web', 'web-a', [
    endpoint('10.244.2.5', 'edge-2'), endpoint('10.244.1.3', THIS_NODE), endpoint('10.244.0.9', 'edge-3'), endpoint('10.244.1.2', THIS_NODE)
  ])])

  it('is every endpoint, sorted, when the policy needs the agent', () => {
    const p = onlyPort(snap, { destinationRules: [rule('web', { kind: 'least-request' })] })
    expect(agentEndpoints(p)).toEqual(['10.244.0.9:8080', '10.244.1.2:8080', '10.244.1.3:8080', '10.244.2.5:8080'])
  })

  it('is only the tunnel endpoints, sorted, otherwise', () => {
    expect(agentEndpoints(onlyPort(snap))).toEqual(['10.244.0.9:8080', '10.244.2.5:8080'])
    expect(agentEndpoints(onlyPort(snap, { destinationRules: [rule('web', { kind: 'random' })] }))).toEqual(['10.244.0.9:8080', '10.244.2.5:8080'])
  })

  it('is empty for a port with only local endpoints and a kernel-side policy', () => {
    const local = snapshotOf([service('web')], [slice('web', 'web-a', [endpoint('10.244.1.2', THIS_NODE)])])
    expect(agentEndpoints(onlyPort(local))).toEqual([])
  })
})

describe('samePlan', () => {
  const endpoints = [endpoint('10.244.1.2', THIS_NODE), endpoint('10.244.1.3', THIS_NODE), endpoint('10.244.2.5', 'edge-2')]
  const base = onlyPort(snapshotOf([service('web')], [slice('web', 'web-a', endpoints)]))

  it('is true for plans of equal snapshots built separately', () => {
    const again = onlyPort(snapshotOf([service('web')], [slice('web', 'web-a', [...endpoints].reverse())]))
    expect(again).not.toBe(base)
    expect(samePlan(base, again)).toBe(true)
    expect(samePlan(base, base)).toBe(true)
  })

  it('is false when a direct endpoint differs', () => {
    expect(samePlan(base, { ...base, direct: ['10.244.1.2:8080', '10.244.1.4:8080'] })).toBe(false)
    expect(samePlan(base, { ...base, direct: ['10.244.1.2:8080'] })).toBe(false)
  })

  it('is false when a remote endpoint or its node differs', () => {
    expect(samePlan(base, { ...base, remote: new Map([['10.244.2.5:8080', 'edge-3']]) })).toBe(false)
    expect(samePlan(base, { ...base, remote: new Map([['10.244.2.6:8080', 'edge-2']]) })).toBe(false)
    expect(samePlan(base, { ...base, remote: new Map() })).toBe(false)
    expect(samePlan({ ...base, remote: new Map() }, base)).toBe(false)
  })

  it('is false when an endpoint moves between direct and remote', () => {
    const moved = { ...base, direct: ['10.244.1.2:8080', '10.244.2.5:8080'], remote: new Map([['10.244.1.3:8080', 'edge-2']]) }
    expect(samePlan(base, moved)).toBe(false)
  })

  it('is false when the policy or affinity differs', () => {
    expect(samePlan(base, { ...base, policy: { kind: 'random' } })).toBe(false)
    const byUser = { ...base, policy: { kind: 'consistent-hash', on: { header: 'x-user' } }, agentOnly: true } satisfies ServicePortPlan
    expect(samePlan(byUser, { ...byUser, policy: { kind: 'consistent-hash', on: { header: 'x-tenant' } } })).toBe(false)
    expect(samePlan(byUser, { ...byUser, policy: { kind: 'consistent-hash', on: { sourceIp: true } } })).toBe(false)
    expect(samePlan(byUser, { ...byUser, agentOnly: false })).toBe(false)
    expect(samePlan(base, { ...base, affinitySeconds: 10_800 })).toBe(false)
  })
})

describe('parseCidr and inCidrs', () => {
  const matches = (ip: string, ...cidrs: string[]): boolean => inCidrs(ip, cidrs.map(parseCidr))

  it('matches everything with /0', () => {
    for (const ip of ['0.0.0.0', '1.2.3.4', '127.255.255.255', '128.0.0.0', '255.255.255.255']) expect(matches(ip, '0.0.0.0/0'), ip).toBe(true)
    expect(matches('8.8.8.8', '10.9.8.7/0')).toBe(true)
  })

  it('matches only the address itself with /32 or without a prefix length', () => {
    expect(matches('10.1.2.3', '10.1.2.3/32')).toBe(true)
    expect(matches('10.1.2.2', '10.1.2.3/32')).toBe(false)
    expect(matches('10.1.2.4', '10.1.2.3/32')).toBe(false)
    expect(matches('10.1.2.3', '10.1.2.3')).toBe(true)
    expect(matches('10.1.2.4', '10.1.2.3')).toBe(false)
  })

  it('matches a /24 from .0 to .255 and nothing next to it', () => {
    expect(matches('192.168.8.0', '192.168.8.0/24')).toBe(true)
    expect(matches('192.168.8.255', '192.168.8.0/24')).toBe(true)
    expect(matches('192.168.7.255', '192.168.8.0/24')).toBe(false)
    expect(matches('192.168.9.0', '192.168.8.0/24')).toBe(false)
  })

  it('masks a network that is not aligned to its prefix', () => {
    expect(parseCidr('10.1.2.3/16')).toEqual({ net: ipToInt('10.1.0.0'), mask: 0xffff0000 })
    expect(matches('10.1.9.9', '10.1.2.3/16')).toBe(true)
    expect(matches('10.1.0.0', '10.1.2.3/16')).toBe(true)
    expect(matches('10.1.255.255', '10.1.2.3/16')).toBe(true)
    expect(matches('10.0.255.255', '10.1.2.3/16')).toBe(false)
    expect(matches('10.2.0.0', '10.1.2.3/16')).toBe(false)
  })

  it('handles the high bit (unsigned arithmetic) at /1 and /31', () => {
    expect(matches('200.1.1.1', '128.0.0.0/1')).toBe(true)
    expect(matches('255.255.255.255', '128.0.0.0/1')).toBe(true)
    expect(matches('127.255.255.255', '128.0.0.0/1')).toBe(false)
    expect(matches('127.0.0.1', '0.0.0.0/1')).toBe(true)
    expect(matches('128.0.0.1', '0.0.0.0/1')).toBe(false)
    expect(matches('255.255.255.254', '255.255.255.255/31')).toBe(true)
    expect(matches('255.255.255.253', '255.255.255.255/31')).toBe(false)
  })

  it('matches any of several CIDRs, and nothing with none', () => {
    expect(matches('172.16.5.5', '10.0.0.0/8', '172.16.0.0/12')).toBe(true)
    expect(matches('172.32.0.1', '10.0.0.0/8', '172.16.0.0/12')).toBe(false)
    expect(inCidrs('10.0.0.1', [])).toBe(false)
  })

  it('agrees with a bit-string reference for any address and prefix length', () => {
    const bits = (ip: string): string => ip.split('.').map((o) => Number(o).toString(2).padStart(8, '0')).join('')
    fc.assert(fc.property(fc.ipV4(), fc.ipV4(), fc.integer({ min: 0, max: 32 }), (ip, net, len) => {
      expect(matches(ip, `${net}/${len}`)).toBe(bits(ip).slice(0, len) === bits(net).slice(0, len))
      expect(matches(net, `${net}/${len}`)).toBe(true)
    }), { numRuns: 1000 })
  })

  it.each(['10.0.0.0/33', '10.0.0.0/-1', '10.0.0.0/abc', '10.0.0.0/8.5', '10.0.0.256/8', '10.0.0/8', 'fd00::/8', '', '/8'])('rejects %j', (s) => {
    expect(() => parseCidr(s)).toThrow(/bad IPv4 CIDR/)
  })

  it('rejects a CIDR with an empty or doubled prefix length instead of reading it as /0 or /8', () => {
    const accepted = ['10.0.0.0/', '10.0.0.0/8/9', '10.0.0.0/0x8'].filter((s) => {
      try { parseCidr(s); return true } catch { return false }
    })
    expect(accepted).toEqual([])
  })
})
