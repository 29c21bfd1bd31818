// The agents' and the relay's API permissions, against a real kube-apiserver (v1.36.3, RBAC on):
// the chart's RBAC and peer-record ValidatingAdmissionPolicy are rendered with the real helm and
// applied, then agents act with pod-bound tokens like the ones the kubelet projects. Every
// assertion is on what the apiserver answered (status code, reason, message).
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parse as parseYaml } from 'yaml'
import { HELM_BIN, startControlPlane, type ControlPlane } from '../controlplane/harness.ts'
import {
  AGENT_SERVICE_ACCOUNT, CHART_DIR, PEER_RECORD_POLICY, PLAIN_MANIFEST, RBAC_KINDS, SERVER_SERVICE_ACCOUNT,
  agentToken, apiRequest, installMeshRbac, parseManifests, renderChart, serviceAccountToken,
  type ApiResponse, type InstallResult, type KubeObject
} from '../controlplane/cluster.ts'
import { eventually } from '../lab/wait.ts'
import { loadOrCreateIdentity } from '../../shared/identity.ts'
import { peerIdFromCertificatePem } from '../../shared/relay-certificate.ts'

const execFileP = promisify(execFile)
const NS = 'edgemesh'
const AGENT_USER = `system:serviceaccount:${NS}:${AGENT_SERVICE_ACCOUNT}`
const LEASES = (ns = NS): string => `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases`
const POLICY_DENIED = `ValidatingAdmissionPolicy '${PEER_RECORD_POLICY}' with binding '${PEER_RECORD_POLICY}' denied request: `
const NO_CLAIM = 'edgemesh-agent may only write the peer record named after its node, but its token carries no node-name claim'
const wrongRecord = (node: string, name: string): string => `edgemesh-agent on node ${node} may only write the peer record named ${node}, not ${name}`

/**
 * What every authenticated user (system:basic-user, system:discovery, system:public-info-viewer)
 * and every ServiceAccount (system:service-account-issuer-discovery) may do, by name. A rules
 * review minus these is exactly what the chart granted.
 */
const BUILTIN_RESOURCE_RULES = new Set([
  'authorization.k8s.io/selfsubjectaccessreviews:create',
  'authorization.k8s.io/selfsubjectrulesreviews:create',
  'authentication.k8s.io/selfsubjectreviews:create'
])
const BUILTIN_NON_RESOURCE_URLS = new Set(['/api', '/api/*', '/apis', '/apis/*', '/healthz', '/livez', '/openapi', '/openapi/*', '/readyz',
  '/version', '/version/', '/.well-known/openid-configuration', '/.well-known/openid-configuration/', '/openid/v1/jwks', '/openid/v1/jwks/'])

const grants = (group: string, resources: string[], verbs: string[]): string[] =>
  resources.flatMap((r) => verbs.map((v) => `${group}/${r}:${v}`))
const READ = ['get', 'list', 'watch']
/** the agent's ClusterRole: the catalog, cluster-wide */
const AGENT_CLUSTER_RULES = [...grants('', ['services'], READ), '/nodes:get', ...grants('discovery.k8s.io', ['endpointslices'], READ), ...grants('networking.istio.io', ['destinationrules'], READ)].sort()
/** plus its Role in the mesh namespace: the peer records */
const AGENT_NAMESPACE_RULES = [...AGENT_CLUSTER_RULES, ...grants('coordination.k8s.io', ['leases'], [...READ, 'create', 'update', 'patch'])].sort()

let cp: ControlPlane
let install: InstallResult
let agentA: string
let agentB: string

beforeAll(async () => {
  cp = await startControlPlane()
  install = await installMeshRbac(cp)
  agentA = await agentToken(cp, { nodeName: 'node-a' })
  agentB = await agentToken(cp, { nodeName: 'node-b' })
  // something to read: a Service with an EndpointSlice, and a Secret the agents must not see
  await admin('POST', '/api/v1/namespaces/default/services', { metadata: { name: 'echo' }, spec: { ports: [{ port: 80 }] } }, 201)
  await admin('POST', '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices', {
    metadata: { name: 'echo-1', labels: { 'kubernetes.io/service-name': 'echo' } },
    addressType: 'IPv4',
    endpoints: [{ addresses: ['10.244.1.5'], nodeName: 'node-b' }],
    ports: [{ port: 80, protocol: 'TCP' }]
  }, 201)
  await admin('POST', `/api/v1/namespaces/${NS}/secrets`, { metadata: { name: 'edgemesh-psk' }, stringData: { 'swarm.key': 'x' } }, 201)
}, 120_000)

afterAll(async () => { await cp?.stop() })

async function admin (method: string, path: string, body: unknown, expectStatus: number): Promise<ApiResponse> {
  const res = await apiRequest(cp, cp.adminToken, method, path, body)
  expect(res.status, `admin ${method} ${path}: ${res.text}`).toBe(expectStatus)
  return res
}

/** RFC 3339 with microseconds: the wire format of a Lease's MicroTime fields. */
const microTime = (d = new Date()): string => d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z')

function lease (name: string, ns = NS): KubeObject {
  return {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: { name, namespace: ns, labels: { 'edgemesh.io/peer-record': 'true' } },
    spec: { holderIdentity: name, leaseDurationSeconds: 40, renewTime: microTime() }
  }
}

/** Flattened `group/resource:verb` grants of a SelfSubjectRulesReview, built-ins removed. */
async function grantedRules (token: string, namespace: string): Promise<{ resources: string[], nonResourceExtras: string[] }> {
  const res = await apiRequest(cp, token, 'POST', '/apis/authorization.k8s.io/v1/selfsubjectrulesreviews', { spec: { namespace } })
  expect(res.status, res.text).toBe(201)
  expect(res.body.status.incomplete, res.body.status.evaluationError).toBe(false)
  const resources = new Set<string>()
  for (const rule of res.body.status.resourceRules as Array<Record<string, string[] | undefined>>) {
    const names = rule.resourceNames?.length ? `[${rule.resourceNames.join(',')}]` : ''
    for (const g of rule.apiGroups ?? []) for (const r of rule.resources ?? []) for (const v of rule.verbs ?? []) resources.add(`${g}/${r}:${v}${names}`)
  }
  const nonResourceExtras = new Set<string>()
  for (const rule of res.body.status.nonResourceRules as Array<Record<string, string[]>>) {
    for (const url of rule.nonResourceURLs ?? []) {
      for (const v of rule.verbs ?? []) if (v !== 'get' || !BUILTIN_NON_RESOURCE_URLS.has(url)) nonResourceExtras.add(`${url}:${v}`)
    }
  }
  // the built-ins must be there (else the filter hides nothing and proves nothing)
  for (const b of BUILTIN_RESOURCE_RULES) expect(resources.has(b), `built-in ${b}`).toBe(true)
  return { resources: [...resources].filter((r) => !BUILTIN_RESOURCE_RULES.has(r)).sort(), nonResourceExtras: [...nonResourceExtras].sort() }
}

function expectForbiddenByRbac (res: ApiResponse, verb: string, resource: string, where: string): void {
  expect(res.status, res.text).toBe(403)
  expect(res.body?.reason).toBe('Forbidden')
  expect(res.body.message).toContain(`User "${AGENT_USER}" cannot ${verb} resource "${resource}"`)
  expect(res.body.message).toContain(where)
  expect(res.body.message).not.toContain('ValidatingAdmissionPolicy')
}

function expectDeniedByPolicy (res: ApiResponse, message: string): void {
  expect(res.status, res.text).toBe(403)
  expect(res.body?.reason).toBe('Forbidden')
  expect(res.body.message).toContain(POLICY_DENIED + message)
}

describe('install', () => {
  it('applies only Namespace, ServiceAccounts, RBAC and the policy from the rendered chart, and waits until the policy is enforced', () => {
    const kinds = install.objects.map((o) => `${o.kind}/${o.metadata?.name}`).sort()
    expect(kinds).toEqual([
      'ClusterRole/edgemesh-agent', 'ClusterRoleBinding/edgemesh-agent', 'Namespace/edgemesh', 'Role/edgemesh-agent', 'RoleBinding/edgemesh-agent',
      'ServiceAccount/edgemesh-agent', 'ServiceAccount/edgemesh-server',
      `ValidatingAdmissionPolicy/${PEER_RECORD_POLICY}`, `ValidatingAdmissionPolicyBinding/${PEER_RECORD_POLICY}`
    ])
    expect(install.enforcedAfterMs).toBeGreaterThanOrEqual(0)
    console.log(`peer-record policy enforced ${install.enforcedAfterMs} ms after the apply (${install.probes} probe(s))`)
  })

  it('the agent token is pod-bound and carries its node name', async () => {
    const res = await apiRequest(cp, agentA, 'POST', '/apis/authentication.k8s.io/v1/selfsubjectreviews', {})
    expect(res.status, res.text).toBe(201)
    const user = res.body.status.userInfo
    expect(user.username).toBe(AGENT_USER)
    expect(user.extra['authentication.kubernetes.io/node-name']).toEqual(['node-a'])
    expect(user.extra['authentication.kubernetes.io/pod-name']).toEqual(['edgemesh-agent-node-a'])
  })
})

describe('agent permissions (SelfSubjectRulesReview)', () => {
  it(`in ${NS}: exactly read services, endpointslices, destinationrules, get nodes and read/write leases (no delete)`, async () => {
    const { resources, nonResourceExtras } = await grantedRules(agentA, NS)
    expect(resources).toEqual(AGENT_NAMESPACE_RULES)
    expect(nonResourceExtras).toEqual([])
  })

  it('in default: exactly the cluster-wide reads, no leases', async () => {
    const { resources, nonResourceExtras } = await grantedRules(agentA, 'default')
    expect(resources).toEqual(AGENT_CLUSTER_RULES)
    expect(nonResourceExtras).toEqual([])
  })

  it('the relay server\'s ServiceAccount has nothing beyond the built-ins, anywhere', async () => {
    const server = await serviceAccountToken(cp, { namespace: NS, serviceAccount: SERVER_SERVICE_ACCOUNT })
    for (const ns of [NS, 'default']) expect(await grantedRules(server, ns), ns).toEqual({ resources: [], nonResourceExtras: [] })
    const list = await apiRequest(cp, server, 'GET', '/api/v1/services')
    expect(list.status, list.text).toBe(403)
    expect(list.body.message).toContain(`User "system:serviceaccount:${NS}:${SERVER_SERVICE_ACCOUNT}" cannot list resource "services"`)
    const write = await apiRequest(cp, server, 'POST', LEASES(), lease('relay'))
    expect(write.status, write.text).toBe(403)
    expect(write.body.message).toContain('cannot create resource "leases"')
  })
})

describe('agent reads the catalog', () => {
  for (const [what, path, item] of [
    ['services', '/api/v1/services', 'echo'],
    ['endpointslices', '/apis/discovery.k8s.io/v1/endpointslices', 'echo-1']
  ] as const) {
    it(`lists and watches ${what} cluster-wide`, async () => {
      const list = await apiRequest(cp, agentA, 'GET', path)
      expect(list.status, list.text).toBe(200)
      expect(list.body.items.map((i: KubeObject) => i.metadata?.name)).toContain(item)
      // a watch from "now" opens (200) and starts with the current objects as ADDED events
      const watch = await apiRequest(cp, agentA, 'GET', `${path}?watch=1&timeoutSeconds=1`)
      expect(watch.status, watch.text).toBe(200)
      const events = watch.text.trim().split('\n').map((l) => JSON.parse(l))
      expect(events.some((e) => e.type === 'ADDED' && e.object.metadata.name === item), watch.text.slice(0, 500)).toBe(true)
    })
  }

  it('gets a Node by name (its own: the peer record\'s owner; another: SOCKS5\'s "no agent there"), but may not list or watch Nodes', async () => {
    await admin('POST', '/api/v1/nodes', { metadata: { name: 'node-bare' } }, 201)
    const own = await apiRequest(cp, agentA, 'GET', '/api/v1/nodes/node-a')
    expect(own.status, own.text).toBe(200)
    expect(own.body.metadata.uid).toMatch(/^[0-9a-f-]{36}$/)
    expect((await apiRequest(cp, agentA, 'GET', '/api/v1/nodes/node-bare')).status).toBe(200)
    expect((await apiRequest(cp, agentA, 'GET', '/api/v1/nodes/no-such-node')).status).toBe(404)
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'GET', '/api/v1/nodes'), 'list', 'nodes', 'at the cluster scope')
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'GET', '/api/v1/nodes?watch=1&timeoutSeconds=1'), 'watch', 'nodes', 'at the cluster scope')
  })

  it('reads the peer records (Leases) in the mesh namespace, and nothing in another namespace', async () => {
    expect((await apiRequest(cp, agentA, 'GET', LEASES())).status).toBe(200)
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'GET', LEASES('default')), 'list', 'leases', 'in the namespace "default"')
  })

  it('cannot read Secrets or ConfigMaps', async () => {
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'GET', `/api/v1/namespaces/${NS}/secrets`), 'list', 'secrets', `in the namespace "${NS}"`)
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'GET', `/api/v1/namespaces/${NS}/secrets/edgemesh-psk`), 'get', 'secrets', `in the namespace "${NS}"`)
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'GET', '/api/v1/secrets'), 'list', 'secrets', 'at the cluster scope')
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'GET', '/api/v1/configmaps'), 'list', 'configmaps', 'at the cluster scope')
  })
})

describe('peer records: each agent writes only its own node\'s Lease', () => {
  it('agent A creates, updates and patches Lease node-a', async () => {
    const created = await apiRequest(cp, agentA, 'POST', LEASES(), lease('node-a'))
    expect(created.status, created.text).toBe(201)
    expect(created.body.spec.holderIdentity).toBe('node-a')

    const renewed = { ...created.body, spec: { ...created.body.spec, renewTime: microTime(new Date(Date.now() + 10_000)) } }
    const updated = await apiRequest(cp, agentA, 'PUT', `${LEASES()}/node-a`, renewed)
    expect(updated.status, updated.text).toBe(200)
    expect(updated.body.spec.renewTime).toBe(renewed.spec.renewTime)

    const patched = await apiRequest(cp, agentA, 'PATCH', `${LEASES()}/node-a`, { spec: { leaseDurationSeconds: 41 } }, 'application/merge-patch+json')
    expect(patched.status, patched.text).toBe(200)
    expect(patched.body.spec.leaseDurationSeconds).toBe(41)
  })

  it('agent A may not create Lease node-b (the policy names both nodes)', async () => {
    expectDeniedByPolicy(await apiRequest(cp, agentA, 'POST', LEASES(), lease('node-b')), wrongRecord('node-a', 'node-b'))
    // generateName does not get around it: the name is generated before admission
    const generated = await apiRequest(cp, agentA, 'POST', LEASES(), { ...lease('x'), metadata: { generateName: 'node-a' } })
    expect(generated.status, generated.text).toBe(403)
    expect(generated.body.message).toMatch(new RegExp(`${POLICY_DENIED}edgemesh-agent on node node-a may only write the peer record named node-a, not node-a[a-z0-9]{5}$`))
    expect((await apiRequest(cp, cp.adminToken, 'GET', `${LEASES()}/node-b`)).status).toBe(404)
  })

  it('agent A may not update, patch or delete node-b\'s Lease once it exists; agent B may update it', async () => {
    const original = (await admin('POST', LEASES(), lease('node-b'), 201)).body
    // create over an existing name: admission runs before the storage conflict check
    expectDeniedByPolicy(await apiRequest(cp, agentA, 'POST', LEASES(), lease('node-b')), wrongRecord('node-a', 'node-b'))
    const hijack = { ...original, spec: { ...original.spec, holderIdentity: 'node-a' } }
    expectDeniedByPolicy(await apiRequest(cp, agentA, 'PUT', `${LEASES()}/node-b`, hijack), wrongRecord('node-a', 'node-b'))
    expectDeniedByPolicy(await apiRequest(cp, agentA, 'PATCH', `${LEASES()}/node-b`, { spec: { holderIdentity: 'node-a' } }, 'application/merge-patch+json'),
      wrongRecord('node-a', 'node-b'))
    // delete is not granted at all, so RBAC answers before the policy would
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'DELETE', `${LEASES()}/node-b`), 'delete', 'leases', `in the namespace "${NS}"`)
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'DELETE', `${LEASES()}/node-a`), 'delete', 'leases', `in the namespace "${NS}"`)
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'DELETE', LEASES()), 'deletecollection', 'leases', `in the namespace "${NS}"`)

    const after = await admin('GET', `${LEASES()}/node-b`, undefined, 200)
    expect(after.body.spec.holderIdentity).toBe('node-b')
    expect(after.body.metadata.resourceVersion).toBe(original.metadata.resourceVersion)

    const renewed = await apiRequest(cp, agentB, 'PUT', `${LEASES()}/node-b`, { ...after.body, spec: { ...after.body.spec, renewTime: microTime() } })
    expect(renewed.status, renewed.text).toBe(200)
    expectDeniedByPolicy(await apiRequest(cp, agentB, 'PATCH', `${LEASES()}/node-a`, { spec: { holderIdentity: 'node-b' } }, 'application/merge-patch+json'),
      wrongRecord('node-b', 'node-a'))
  })

  it('a ServiceAccount token not bound to a pod (no node-name claim) may write no Lease, though RBAC allows it', async () => {
    const unbound = await serviceAccountToken(cp, { namespace: NS, serviceAccount: AGENT_SERVICE_ACCOUNT })
    const review = await apiRequest(cp, unbound, 'POST', '/apis/authentication.k8s.io/v1/selfsubjectreviews', {})
    expect(review.body.status.userInfo.username).toBe(AGENT_USER)
    expect(review.body.status.userInfo.extra?.['authentication.kubernetes.io/node-name']).toBeUndefined()
    expect((await apiRequest(cp, unbound, 'GET', LEASES())).status).toBe(200)

    expectDeniedByPolicy(await apiRequest(cp, unbound, 'POST', LEASES(), lease('node-c')), `${NO_CLAIM} (use the pod-bound token the kubelet projects), so it may not write node-c`)
    const current = (await admin('GET', `${LEASES()}/node-a`, undefined, 200)).body
    expectDeniedByPolicy(await apiRequest(cp, unbound, 'PUT', `${LEASES()}/node-a`, current), NO_CLAIM)
    expectDeniedByPolicy(await apiRequest(cp, unbound, 'PATCH', `${LEASES()}/node-a`, { spec: { holderIdentity: 'x' } }, 'application/merge-patch+json'), NO_CLAIM)
    expect((await admin('GET', `${LEASES()}/node-a`, undefined, 200)).body.metadata.resourceVersion).toBe(current.metadata.resourceVersion)
  })

  it('other users (the admin) are not affected by the policy', async () => {
    const res = await admin('POST', LEASES(), lease('admin-made'), 201)
    expect(res.body.metadata.name).toBe('admin-made')
    await admin('DELETE', `${LEASES()}/admin-made`, undefined, 200)
  })
})

describe('agent may not write anything else', () => {
  it('Services, ConfigMaps, Secrets, EndpointSlices, Nodes: 403 from RBAC', async () => {
    const svc = { metadata: { name: 'evil' }, spec: { ports: [{ port: 80 }] } }
    for (const ns of [NS, 'default']) {
      expectForbiddenByRbac(await apiRequest(cp, agentA, 'POST', `/api/v1/namespaces/${ns}/services`, svc), 'create', 'services', `in the namespace "${ns}"`)
      expectForbiddenByRbac(await apiRequest(cp, agentA, 'POST', `/api/v1/namespaces/${ns}/configmaps`, { metadata: { name: 'evil' } }), 'create', 'configmaps', `in the namespace "${ns}"`)
      expectForbiddenByRbac(await apiRequest(cp, agentA, 'POST', `/api/v1/namespaces/${ns}/secrets`, { metadata: { name: 'evil' } }), 'create', 'secrets', `in the namespace "${ns}"`)
    }
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'PATCH', '/api/v1/namespaces/default/services/echo', { metadata: { labels: { x: 'y' } } }, 'application/merge-patch+json'),
      'patch', 'services', 'in the namespace "default"')
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'DELETE', '/api/v1/namespaces/default/services/echo'), 'delete', 'services', 'in the namespace "default"')
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'PUT', `/api/v1/namespaces/${NS}/secrets/edgemesh-psk`, { metadata: { name: 'edgemesh-psk' }, stringData: { 'swarm.key': 'y' } }),
      'update', 'secrets', `in the namespace "${NS}"`)
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'DELETE', '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/echo-1'), 'delete', 'endpointslices', 'in the namespace "default"')
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'PATCH', '/api/v1/nodes/node-a', { metadata: { labels: { x: 'y' } } }, 'application/merge-patch+json'), 'patch', 'nodes', 'at the cluster scope')
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'PATCH', '/api/v1/nodes/node-a/status', { status: {} }, 'application/merge-patch+json'), 'patch', 'nodes/status', 'at the cluster scope')
  })

  it('Leases in another namespace: 403 from RBAC (its own node name included)', async () => {
    for (const ns of ['default', 'kube-system']) {
      expectForbiddenByRbac(await apiRequest(cp, agentA, 'POST', LEASES(ns), lease('node-a', ns)), 'create', 'leases', `in the namespace "${ns}"`)
    }
    await admin('POST', LEASES('default'), lease('node-a', 'default'), 201)
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'PATCH', `${LEASES('default')}/node-a`, { spec: { leaseDurationSeconds: 1 } }, 'application/merge-patch+json'),
      'patch', 'leases', 'in the namespace "default"')
  })

  it('cannot grant itself more: RBAC objects, pods, token requests', async () => {
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'POST', `/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/rolebindings`, {
      metadata: { name: 'evil' }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'cluster-admin' },
      subjects: [{ kind: 'ServiceAccount', name: AGENT_SERVICE_ACCOUNT, namespace: NS }]
    }), 'create', 'rolebindings', `in the namespace "${NS}"`)
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'POST', `/api/v1/namespaces/${NS}/pods`, { metadata: { name: 'evil' }, spec: { containers: [{ name: 'x', image: 'x' }] } }),
      'create', 'pods', `in the namespace "${NS}"`)
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'POST', `/api/v1/namespaces/${NS}/serviceaccounts/${AGENT_SERVICE_ACCOUNT}/token`, { spec: {} }),
      'create', 'serviceaccounts/token', `in the namespace "${NS}"`)
    expectForbiddenByRbac(await apiRequest(cp, agentA, 'DELETE', `/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/${PEER_RECORD_POLICY}`),
      'delete', 'validatingadmissionpolicybindings', 'at the cluster scope')
  })
})

describe('the policy also covers DELETE (should anyone grant the agents delete)', () => {
  it('with delete granted by an extra Role, agent A may delete node-a\'s Lease but not node-b\'s', async () => {
    await admin('POST', `/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/roles`, {
      metadata: { name: 'test-lease-delete' }, rules: [{ apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['delete'] }]
    }, 201)
    await admin('POST', `/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/rolebindings`, {
      metadata: { name: 'test-lease-delete' }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'test-lease-delete' },
      subjects: [{ kind: 'ServiceAccount', name: AGENT_SERVICE_ACCOUNT, namespace: NS }]
    }, 201)
    try {
      // the RBAC authorizer sees the new binding through an informer: wait until the policy answers
      await eventually(async () => {
        const res = await apiRequest(cp, agentA, 'DELETE', `${LEASES()}/node-b`)
        if (!res.text.includes('ValidatingAdmissionPolicy')) throw new Error(`${res.status} ${res.text}`)
        expectDeniedByPolicy(res, wrongRecord('node-a', 'node-b'))
      }, 10_000)
      expect((await admin('GET', `${LEASES()}/node-b`, undefined, 200)).body.metadata.name).toBe('node-b')
      const own = await apiRequest(cp, agentA, 'DELETE', `${LEASES()}/node-a`)
      expect(own.status, own.text).toBe(200)
      await admin('GET', `${LEASES()}/node-a`, undefined, 404)
    } finally {
      await admin('DELETE', `/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/rolebindings/test-lease-delete`, undefined, 200)
      await admin('DELETE', `/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/roles/test-lease-delete`, undefined, 200)
    }
  })
})

describe('manifests: the plain YAML grants what the chart grants', () => {
  const strip = (o: KubeObject): KubeObject => {
    const { labels: _l, annotations: _a, ...metadata } = o.metadata ?? {}
    return { ...o, metadata }
  }
  const byKey = (objs: KubeObject[]): Map<string, KubeObject> =>
    new Map(objs.filter((o) => RBAC_KINDS.has(o.kind ?? '') && o.kind !== 'Namespace')
      .map((o) => [`${o.kind}/${o.metadata?.namespace ?? ''}/${o.metadata?.name}`, strip(o)]))
  const agentYaml = (objs: KubeObject[]): Record<string, any> =>
    parseYaml(objs.find((o) => o.kind === 'ConfigMap' && o.metadata?.name === 'edgemesh-agent')!.data['agent.yaml'])

  it('ServiceAccounts, (Cluster)Roles, bindings and the policy are identical but for labels', async () => {
    const chart = byKey(await renderChart())
    const plain = byKey(parseManifests(await readFile(PLAIN_MANIFEST, 'utf8'), 'plain manifest'))
    expect([...plain.keys()].sort()).toEqual([...chart.keys()].sort())
    expect(chart.size).toBe(8)
    for (const [key, obj] of chart) expect(plain.get(key), key).toEqual(obj)
  })

  it('both configure the agents for Kubernetes the same way, without a static peer list', async () => {
    const chart = await renderChart()
    const plain = parseManifests(await readFile(PLAIN_MANIFEST, 'utf8'), 'plain manifest')
    for (const objs of [chart, plain]) {
      const cfg = agentYaml(objs)
      expect(cfg.kubernetes).toEqual({ namespace: NS, snapshotFile: '/var/lib/edgemesh/catalog.json' })
      expect(cfg.peersFile).toBeUndefined()
      const ds = objs.find((o) => o.kind === 'DaemonSet')!
      expect(ds.spec.template.spec.automountServiceAccountToken).toBe(true)
      expect(ds.spec.template.spec.serviceAccountName).toBe(AGENT_SERVICE_ACCOUNT)
      const deploy = objs.find((o) => o.kind === 'Deployment')!
      expect(deploy.spec.template.spec.automountServiceAccountToken).toBe(false)
    }
  })

  it('the chart in a different namespace binds that namespace\'s ServiceAccount and scopes the policy to it', async () => {
    const objs = await renderChart({ namespace: 'mesh-2' })
    const vap = objs.find((o) => o.kind === 'ValidatingAdmissionPolicy')!
    expect(vap.spec.matchConditions).toEqual([{ name: 'edgemesh-agent', expression: "request.userInfo.username == 'system:serviceaccount:mesh-2:edgemesh-agent'" }])
    expect(vap.spec.matchConstraints.namespaceSelector).toEqual({ matchLabels: { 'kubernetes.io/metadata.name': 'mesh-2' } })
    for (const kind of ['ClusterRoleBinding', 'RoleBinding']) {
      expect(objs.find((o) => o.kind === kind)!.subjects).toEqual([{ kind: 'ServiceAccount', name: AGENT_SERVICE_ACCOUNT, namespace: 'mesh-2' }])
    }
    expect(agentYaml(objs).kubernetes.namespace).toBe('mesh-2')
  })

  it('standalone mode (agent.kubernetes.enabled=false): no RBAC, no policy, no token, the static peer list', async () => {
    const objs = await renderChart({ args: ['--set', 'agent.kubernetes.enabled=false'] })
    expect(objs.filter((o) => RBAC_KINDS.has(o.kind ?? '')).map((o) => o.kind).sort()).toEqual(['ServiceAccount', 'ServiceAccount'])
    const cfg = agentYaml(objs)
    expect(cfg.kubernetes).toBeUndefined()
    expect(cfg.peersFile).toBe('/etc/edgemesh/peers.yaml')
    expect(objs.find((o) => o.kind === 'ConfigMap' && o.metadata?.name === 'edgemesh-agent')!.data['peers.yaml']).toBe('peers: []\n')
    expect(objs.find((o) => o.kind === 'DaemonSet')!.spec.template.spec.automountServiceAccountToken).toBe(false)
  })
})

describe('the chart\'s PSK on a real apiserver (helm install, upgrade, uninstall, install)', () => {
  // standalone agents: the release has no cluster-scoped objects, so it cannot clash with the
  // RBAC installMeshRbac applied above
  const PSK_NS = 'psk-test'
  const VALUES = ['--set', 'relay.announce[0]=203.0.113.10', '--set', 'relay.peerId=12D3KooWPgHATvH9wN3n43y2TgqGQabmPTxmEDX3rUHkRqLbuZAT',
    '--set', 'agent.kubernetes.enabled=false']
  const SWARM_KEY = /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}$/
  let home: string
  const helm = async (...args: string[]): Promise<string> => {
    const { stdout } = await execFileP(HELM_BIN, [...args, '--namespace', PSK_NS], {
      env: { ...process.env, KUBECONFIG: join(home, 'kubeconfig'), HELM_CACHE_HOME: join(home, 'cache'), HELM_CONFIG_HOME: join(home, 'config'), HELM_DATA_HOME: join(home, 'data') }
    }).catch((err: any) => { throw new Error(`helm ${args[0]}: ${err.stderr ?? err.message}`) })
    return stdout
  }
  const swarmKey = async (): Promise<string> => {
    const res = await admin('GET', `/api/v1/namespaces/${PSK_NS}/secrets/edgemesh-psk`, undefined, 200)
    return Buffer.from(res.body.data['swarm.key'], 'base64').toString('utf8')
  }
  const annotations = async (path: string): Promise<Record<string, string>> =>
    (await admin('GET', `/apis/apps/v1/namespaces/${PSK_NS}/${path}`, undefined, 200)).body.spec.template.metadata.annotations
  const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex')

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), 'edgemesh-helm-psk-'))
    await cp.writeKubeconfig(join(home, 'kubeconfig'))
  })
  afterAll(async () => { if (home != null) await rm(home, { recursive: true, force: true }) })

  it('install creates a random key; upgrades (with or without --reuse-values) keep it and restart nothing; psk.key rotates it; uninstall keeps it; a reinstall finds it', async () => {
    const notes = await helm('install', 'edgemesh', CHART_DIR, '--create-namespace', ...VALUES)
    expect(notes).toContain('MEMBERSHIP: the relay and the agents share a pre-shared key (libp2p pnet swarm.key) from Secret edgemesh-psk')
    const first = await swarmKey()
    expect(first).toMatch(SWARM_KEY)
    for (const w of ['deployments/edgemesh-server', 'daemonsets/edgemesh-agent']) expect((await annotations(w))['checksum/psk'], w).toBe(sha256(first))
    const configBefore = (await annotations('deployments/edgemesh-server'))['checksum/config']

    // an upgrade that changes something else: the key and the pods' psk checksum stay
    await helm('upgrade', 'edgemesh', CHART_DIR, '--reuse-values', '--set', 'server.logLevel=debug')
    expect(await swarmKey()).toBe(first)
    const upgraded = await annotations('deployments/edgemesh-server')
    expect(upgraded['checksum/config']).not.toBe(configBefore)
    expect(upgraded['checksum/psk']).toBe(sha256(first))
    await helm('upgrade', 'edgemesh', CHART_DIR, ...VALUES)
    expect(await swarmKey()).toBe(first)
    expect((await annotations('daemonsets/edgemesh-agent'))['checksum/psk']).toBe(sha256(first))

    // an explicit key replaces it (and restarts the pods: their checksum changes)
    const rotated = `/key/swarm/psk/1.0.0/\n/base16/\n${'5a'.repeat(32)}`
    await helm('upgrade', 'edgemesh', CHART_DIR, ...VALUES, '--set', `psk.key=${'5A'.repeat(32)}`)
    expect(await swarmKey()).toBe(rotated)
    expect((await annotations('daemonsets/edgemesh-agent'))['checksum/psk']).toBe(sha256(rotated))

    // the membership key outlives the release, and a new install of it adopts and keeps it
    await helm('uninstall', 'edgemesh')
    await admin('GET', `/apis/apps/v1/namespaces/${PSK_NS}/deployments/edgemesh-server`, undefined, 404)
    expect(await swarmKey()).toBe(rotated)
    await helm('install', 'edgemesh', CHART_DIR, ...VALUES)
    expect(await swarmKey()).toBe(rotated)
    expect((await annotations('deployments/edgemesh-server'))['checksum/psk']).toBe(sha256(rotated))
    // the key never lands in the release's stored values
    expect(await helm('get', 'values', 'edgemesh', '--all', '-o', 'json')).not.toContain('5a5a5a')
    await helm('uninstall', 'edgemesh')
  }, 120_000)
})

describe('the chart\'s relay identity on a real apiserver (one-command install, upgrade, uninstall, install)', () => {
  // standalone agents (no cluster-scoped objects, no clash with the RBAC installed above); only
  // the relay's address is given, as a user's one-command install
  const ID_NS = 'identity-test'
  const VALUES = ['--set', 'relay.announce[0]=203.0.113.10', '--set', 'agent.kubernetes.enabled=false']
  let home: string
  const helm = async (ns: string, ...args: string[]): Promise<string> => {
    const { stdout } = await execFileP(HELM_BIN, [...args, '--namespace', ns], {
      env: { ...process.env, KUBECONFIG: join(home, 'kubeconfig'), HELM_CACHE_HOME: join(home, 'cache'), HELM_CONFIG_HOME: join(home, 'config'), HELM_DATA_HOME: join(home, 'data') }
    }).catch((err: any) => { throw new Error(`helm ${args[0]}: ${err.stderr ?? err.message}`) })
    return stdout
  }
  const get = async (ns: string, path: string): Promise<ApiResponse> => await apiRequest(cp, cp.adminToken, 'GET', `/api/v1/namespaces/${ns}/${path}`)
  /** the relay's identity as the cluster holds it: key and certificate from the Secret, the ConfigMap's certificate */
  const identity = async (ns = ID_NS): Promise<{ key: string, cert: string, published: string | undefined }> => {
    const secret = await get(ns, 'secrets/edgemesh-relay-identity')
    expect(secret.status, secret.text).toBe(200)
    expect(secret.body.type).toBe('kubernetes.io/tls')
    expect(secret.body.metadata.annotations['helm.sh/resource-policy']).toBe('keep')
    const cm = await get(ns, 'configmaps/edgemesh-relay-certificate')
    const b64 = (s: string): string => Buffer.from(s, 'base64').toString('utf8')
    return { key: b64(secret.body.data['tls.key']), cert: b64(secret.body.data['tls.crt']), published: cm.status === 200 ? cm.body.data['relay.crt'] : undefined }
  }
  const workload = async (ns: string, path: string): Promise<KubeObject> => (await admin('GET', `/apis/apps/v1/namespaces/${ns}/${path}`, undefined, 200)).body
  const configMapYaml = async (ns: string, name: string, key: string): Promise<Record<string, any>> => parseYaml((await admin('GET', `/api/v1/namespaces/${ns}/configmaps/${name}`, undefined, 200)).body.data[key])
  const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex')
  const peerIdOfKey = async (pem: string): Promise<string> => {
    const file = join(home, `relay-${Date.now()}.key`)
    await writeFile(file, pem)
    return (await loadOrCreateIdentity(file)).peerId.toString()
  }

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), 'edgemesh-helm-identity-'))
    await cp.writeKubeconfig(join(home, 'kubeconfig'))
  })
  afterAll(async () => { if (home != null) await rm(home, { recursive: true, force: true }) })

  it('install generates one identity (key and certificate agree); upgrades keep it and restart nothing; uninstall keeps the key; a reinstall finds it', async () => {
    const notes = await helm(ID_NS, 'install', 'edgemesh', CHART_DIR, '--create-namespace', ...VALUES)
    expect(notes).toContain('The relay\'s identity was generated by the chart: its key in Secret edgemesh-relay-identity (relay only)')
    const first = await identity()
    expect(first.published?.trim()).toBe(first.cert.trim())
    const relayPeerId = await peerIdOfKey(first.key)
    expect(peerIdFromCertificatePem(first.cert)).toBe(relayPeerId)
    expect((await configMapYaml(ID_NS, 'edgemesh-server', 'server.yaml')).identityFile).toBe('/etc/edgemesh/relay.key')
    expect((await configMapYaml(ID_NS, 'edgemesh-agent', 'agent.yaml')).relays).toEqual([{ host: '203.0.113.10', certificateFile: '/etc/edgemesh/relay.crt', tcpPort: 4001, udpPort: 4002 }])
    const relayChecksum = (await workload(ID_NS, 'deployments/edgemesh-server')).spec.template.metadata.annotations['checksum/relay-identity']
    const agentChecksum = (await workload(ID_NS, 'daemonsets/edgemesh-agent')).spec.template.metadata.annotations['checksum/relay-certificate']
    expect(relayChecksum).toBe(sha256(first.cert))
    expect(agentChecksum).toBe(sha256(first.cert))

    // upgrades, with and without --reuse-values: the same key and certificate, the same pod checksums
    await helm(ID_NS, 'upgrade', 'edgemesh', CHART_DIR, '--reuse-values', '--set', 'server.logLevel=debug')
    expect(await identity()).toEqual(first)
    await helm(ID_NS, 'upgrade', 'edgemesh', CHART_DIR, ...VALUES)
    expect(await identity()).toEqual(first)
    expect((await workload(ID_NS, 'deployments/edgemesh-server')).spec.template.metadata.annotations['checksum/relay-identity']).toBe(relayChecksum)
    expect((await workload(ID_NS, 'daemonsets/edgemesh-agent')).spec.template.metadata.annotations['checksum/relay-certificate']).toBe(agentChecksum)

    // uninstall: the key stays (the certificate's ConfigMap goes); a reinstall has the same relay peer id
    await helm(ID_NS, 'uninstall', 'edgemesh')
    expect((await get(ID_NS, 'configmaps/edgemesh-relay-certificate')).status).toBe(404)
    expect((await identity()).key).toBe(first.key)
    await helm(ID_NS, 'install', 'edgemesh', CHART_DIR, ...VALUES)
    expect(await identity()).toEqual(first)
    // the key never lands in the release's stored values or manifest history beyond the Secret
    expect(await helm(ID_NS, 'get', 'values', 'edgemesh', '--all', '-o', 'json')).not.toContain('PRIVATE KEY')
    await helm(ID_NS, 'uninstall', 'edgemesh')
  }, 120_000)

  it('an upgrade of a release whose relay already runs with its own key (an older chart) keeps that key: no identity is generated', async () => {
    const ns = 'identity-older'
    // what an older chart installed: a relay with its key in server.persistence, no generated identity
    await helm(ns, 'install', 'edgemesh', CHART_DIR, '--create-namespace', ...VALUES, '--set', 'server.identity.generate=false', '--set', 'agent.enabled=false')
    await helm(ns, 'upgrade', 'edgemesh', CHART_DIR, ...VALUES, '--set', 'agent.enabled=false')
    expect((await get(ns, 'secrets/edgemesh-relay-identity')).status).toBe(404)
    expect((await configMapYaml(ns, 'edgemesh-server', 'server.yaml')).identityFile).toBe('/var/lib/edgemesh/server.key')
    // its agents then need relay.peerId, and the render says so
    const err = await helm(ns, 'upgrade', 'edgemesh', CHART_DIR, ...VALUES).then(() => undefined, (e: Error) => e)
    expect(err?.message).toContain('helm upgrade --reuse-values --set relay.peerId=12D3KooW...')
    await helm(ns, 'uninstall', 'edgemesh')
  }, 120_000)
})
