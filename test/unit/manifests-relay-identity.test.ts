// The relay identity the Helm chart generates (one-command install), rendered with the real helm
// (`helm template`): a Secret holding the relay's Ed25519 key and its certificate, mounted into the
// relay only; a ConfigMap with the certificate, mounted into the agents, whose agent.yaml names the
// relay by it. The key and the certificate are derived here independently (node:crypto for the
// certificate, the relay's own key loader for the key) and must name the same peer. The
// precedence of the other ways (agent.relays, relay.peerId, server.identity.existingSecret,
// server.persistence) and that no API permission changes. What `lookup` keeps across upgrades and
// reinstalls is checked on a real apiserver in test/e2e/k8s-rbac.test.ts.
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, posix } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parse as parseYaml } from 'yaml'
import { AgentConfig, ServerConfig } from '../../shared/config.ts'
import { loadOrCreateIdentity } from '../../shared/identity.ts'
import { peerIdFromCertificatePem } from '../../shared/relay-certificate.ts'
import { renderChart } from '../controlplane/cluster.ts'

type Obj = Record<string, any>
const PEER = '12D3KooWPgHATvH9wN3n43y2TgqGQabmPTxmEDX3rUHkRqLbuZAT'
const RELEASE = 'em' // fullname em-edgemesh, as in `helm install em manifests/helm/edgemesh`
const SECRET = 'em-edgemesh-relay-identity'
const CERT_CONFIGMAP = 'em-edgemesh-relay-certificate'
const RBAC_KINDS = new Set(['Role', 'ClusterRole', 'RoleBinding', 'ClusterRoleBinding', 'ServiceAccount', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding'])

/** renderChart always passes a dummy relay.peerId; `relay.peerId=` (empty) is the one-command install */
const render = async (...set: string[]): Promise<Obj[]> => await renderChart({ releaseName: RELEASE, args: ['relay.peerId=', ...set].flatMap((s) => ['--set', s]) })
const find = (objs: Obj[], kind: string, name: string): Obj | undefined => objs.find((o) => o.kind === kind && o.metadata?.name === name)
const must = (objs: Obj[], kind: string, name: string): Obj => { const o = find(objs, kind, name); expect(o, `${kind}/${name}`).toBeDefined(); return o! }
const server = (objs: Obj[]): Obj => must(objs, 'Deployment', 'em-edgemesh-server')
const agent = (objs: Obj[]): Obj => must(objs, 'DaemonSet', 'em-edgemesh-agent')
const podSpec = (w: Obj): Obj => w.spec.template.spec
const annotations = (w: Obj): Record<string, string> => w.spec.template.metadata.annotations
const serverYaml = (objs: Obj[]): Obj => parseYaml(must(objs, 'ConfigMap', 'em-edgemesh-server').data['server.yaml'])
const agentYaml = (objs: Obj[]): Obj => parseYaml(must(objs, 'ConfigMap', 'em-edgemesh-agent').data['agent.yaml'])
const secretFile = (objs: Obj[], key: string): string => Buffer.from(must(objs, 'Secret', SECRET).data[key], 'base64').toString('utf8')
const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex')

/** What the container sees at `path`: the Secret or ConfigMap item a (projected) volume puts there. */
function mountedAt (w: Obj, path: string): { kind: 'Secret' | 'ConfigMap', name: string, key: string, mode?: number } | undefined {
  const container = podSpec(w).containers[0] as Obj
  const mount = (container.volumeMounts as Obj[]).find((m) => m.mountPath === posix.dirname(path))
  if (mount == null) return undefined
  const volume = (podSpec(w).volumes as Obj[]).find((v) => v.name === mount.name)!
  for (const s of (volume.projected?.sources ?? []) as Obj[]) {
    const ref = s.secret ?? s.configMap
    const item = ((ref?.items ?? []) as Obj[]).find((i) => i.path === posix.basename(path))
    if (item != null) return { kind: s.secret != null ? 'Secret' : 'ConfigMap', name: ref.name, key: item.key, ...(item.mode != null ? { mode: item.mode } : {}) }
  }
  return undefined
}
/** Every Secret or ConfigMap a workload's pods mount, by name. */
const mountedObjects = (w: Obj): string[] => (podSpec(w).volumes as Obj[]).flatMap((v) => [
  ...(v.secret != null ? [v.secret.secretName] : []), ...(v.configMap != null ? [v.configMap.name] : []),
  ...((v.projected?.sources ?? []) as Obj[]).map((s) => (s.secret ?? s.configMap)?.name).filter((n): n is string => n != null)
]).sort()

let dir: string
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'edgemesh-relay-identity-')) })
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

describe('helm install with only relay.announce: the chart generates the relay\'s identity', () => {
  let objs: Obj[]
  let again: Obj[]
  beforeAll(async () => { [objs, again] = await Promise.all([render(), render()]) })

  it('a kubernetes.io/tls Secret with the relay\'s Ed25519 key and its certificate, kept on uninstall; the certificate, public, in a ConfigMap', () => {
    const secret = must(objs, 'Secret', SECRET)
    expect(secret.type).toBe('kubernetes.io/tls')
    expect(Object.keys(secret.data).sort()).toEqual(['tls.crt', 'tls.key'])
    expect(secret.metadata.annotations['helm.sh/resource-policy']).toBe('keep')
    expect(secret.metadata.namespace).toBe('edgemesh')
    const key = createPrivateKey(secretFile(objs, 'tls.key'))
    expect(key.asymmetricKeyType).toBe('ed25519')
    expect(secretFile(objs, 'tls.key')).toMatch(/^-----BEGIN PRIVATE KEY-----\n/) // PKCS#8
    const cm = must(objs, 'ConfigMap', CERT_CONFIGMAP)
    expect(Object.keys(cm.data)).toEqual(['relay.crt'])
    expect(cm.data['relay.crt'].trim()).toBe(secretFile(objs, 'tls.crt').trim())
    // helm template cannot look the Secret up: each render is a new identity (install/upgrade keep it: test/e2e/k8s-rbac.test.ts)
    expect(secretFile(again, 'tls.key')).not.toBe(secretFile(objs, 'tls.key'))
  })

  it('the key and the certificate are one identity: the relay\'s peer id from the key is the one agents derive from the certificate', async () => {
    const keyPem = secretFile(objs, 'tls.key')
    const certPem = must(objs, 'ConfigMap', CERT_CONFIGMAP).data['relay.crt'] as string
    // public key of each, by node:crypto alone
    const fromKey = createPrivateKey(keyPem).export({ format: 'jwk' }).x
    const fromCert = new X509Certificate(certPem).publicKey.export({ format: 'jwk' }).x
    expect(fromCert).toBe(fromKey)
    // the relay's loader on the key, the agent's derivation on the certificate
    const keyFile = join(dir, 'relay.key')
    await writeFile(keyFile, keyPem)
    const relayPeerId = (await loadOrCreateIdentity(keyFile)).peerId.toString()
    expect(relayPeerId).toMatch(/^12D3KooW/)
    expect(peerIdFromCertificatePem(certPem)).toBe(relayPeerId)
  })

  it('the relay loads the key from the Secret (relay.key, 0400) at identityFile; no data volume, no hostPath, no PVC', () => {
    const cfg = ServerConfig.parse(serverYaml(objs))
    expect(cfg.identityFile).toBe('/etc/edgemesh/relay.key')
    // mode 0400: the apiserver reads YAML 1.1 (octal, owner read-only); this YAML 1.2 parser reads the digits 400
    expect(mountedAt(server(objs), cfg.identityFile)).toEqual({ kind: 'Secret', name: SECRET, key: 'tls.key', mode: 400 })
    expect((podSpec(server(objs)).volumes as Obj[]).map((v) => v.name)).toEqual(['config'])
    expect(objs.filter((o) => o.kind === 'PersistentVolumeClaim')).toEqual([])
  })

  it('agent.yaml names the relay by host and certificateFile; the agents mount the ConfigMap there and never the key', async () => {
    const raw = agentYaml(objs)
    expect(raw.relays).toEqual([{ host: '203.0.113.10', certificateFile: '/etc/edgemesh/relay.crt', tcpPort: 4001, udpPort: 4002 }])
    expect(mountedAt(agent(objs), '/etc/edgemesh/relay.crt')).toEqual({ kind: 'ConfigMap', name: CERT_CONFIGMAP, key: 'relay.crt' })
    expect(mountedObjects(agent(objs))).not.toContain(SECRET)
    expect(mountedObjects(agent(objs))).toEqual(['em-edgemesh-agent', 'em-edgemesh-psk', CERT_CONFIGMAP].sort())
    expect(mountedObjects(server(objs))).toEqual(['em-edgemesh-psk', 'em-edgemesh-server', SECRET].sort())
    // the agent as it loads agent.yaml, with the rendered certificate where the mount puts it
    const certFile = join(dir, 'relay.crt')
    await writeFile(certFile, must(objs, 'ConfigMap', CERT_CONFIGMAP).data['relay.crt'])
    const cfg = AgentConfig.parse({ ...raw, relays: [{ ...raw.relays[0], certificateFile: certFile }], nodeName: 'edge-1' })
    const keyFile = join(dir, 'relay-2.key')
    await writeFile(keyFile, secretFile(objs, 'tls.key'))
    expect(cfg.relays[0]!.peerId).toBe((await loadOrCreateIdentity(keyFile)).peerId.toString())
  })

  it('a new identity restarts the relay and the agents: both pods carry the certificate\'s checksum', () => {
    const cert = secretFile(objs, 'tls.crt')
    expect(annotations(server(objs))['checksum/relay-identity']).toBe(sha256(cert))
    expect(annotations(agent(objs))['checksum/relay-certificate']).toBe(sha256(must(objs, 'ConfigMap', CERT_CONFIGMAP).data['relay.crt']))
  })

  it('no new API rights: the RBAC, accounts and policy are those of an install with relay.peerId', async () => {
    const withPeerId = await render(`relay.peerId=${PEER}`)
    const pick = (o: Obj[]): Obj[] => o.filter((x) => RBAC_KINDS.has(x.kind))
    expect(pick(objs).length).toBeGreaterThan(0)
    expect(pick(objs)).toEqual(pick(withPeerId))
    expect(JSON.stringify(pick(objs))).not.toMatch(/secrets|configmaps/)
    // and the relay still mounts no API token
    expect(podSpec(server(objs)).automountServiceAccountToken).toBe(false)
  })
})

describe('the other ways to name the relay keep working (precedence)', () => {
  const generatedObjects = (objs: Obj[]): string[] => [find(objs, 'Secret', SECRET), find(objs, 'ConfigMap', CERT_CONFIGMAP)].filter((o) => o != null).map((o) => o!.metadata.name)

  it('relay.peerId: the agents use it; without a generated identity in the namespace the relay keeps its key in server.persistence (as before)', async () => {
    const objs = await render(`relay.peerId=${PEER}`)
    expect(agentYaml(objs).relays).toEqual([{ host: '203.0.113.10', peerId: PEER, tcpPort: 4001, udpPort: 4002 }])
    expect(generatedObjects(objs)).toEqual([])
    expect(serverYaml(objs).identityFile).toBe('/var/lib/edgemesh/server.key')
    expect((podSpec(server(objs)).volumes as Obj[]).find((v) => v.name === 'data')?.hostPath).toEqual({ path: '/var/lib/edgemesh', type: 'DirectoryOrCreate' })
    expect(annotations(agent(objs))['checksum/relay-certificate']).toBeUndefined()
  })

  it('server.identity.existingSecret wins over the generated identity; without relay.peerId the render says what to set', async () => {
    const objs = await render('server.identity.existingSecret=my-relay-key', `relay.peerId=${PEER}`)
    expect(generatedObjects(objs)).toEqual([])
    expect((podSpec(server(objs)).volumes as Obj[]).find((v) => v.name === 'data')?.secret?.secretName).toBe('my-relay-key')
    const err = await render('server.identity.existingSecret=my-relay-key').then(() => undefined, (e: Error) => e)
    expect(err?.message).toContain('The relay uses the key in Secret my-relay-key (server.identity.existingSecret): set relay.peerId to its peer id')
  })

  it('server.identity.generate=false: the relay creates its key in server.persistence (hostPath or a PVC); agents need relay.peerId', async () => {
    const pvc = await render('server.identity.generate=false', 'server.persistence.type=pvc', `relay.peerId=${PEER}`)
    expect(generatedObjects(pvc)).toEqual([])
    expect(find(pvc, 'PersistentVolumeClaim', 'em-edgemesh-server')).toBeDefined()
    expect(serverYaml(pvc).identityFile).toBe('/var/lib/edgemesh/server.key')
    const err = await render('server.identity.generate=false').then(() => undefined, (e: Error) => e)
    expect(err?.message).toContain('agent.enabled is true but the agents have no relay')
    expect(err?.message).toContain('helm upgrade --reuse-values --set relay.peerId=12D3KooW...')
  })

  it('server.replicas > 1: one key per relay node (server.persistence), never one shared generated key', async () => {
    const objs = await render('server.replicas=2', `relay.peerId=${PEER}`)
    expect(generatedObjects(objs)).toEqual([])
    expect(serverYaml(objs).identityFile).toBe('/var/lib/edgemesh/server.key')
  })

  it('agent.relays: the agents use the list; the relay still gets its generated identity', async () => {
    const objs = await render('agent.relays[0].host=198.51.100.7', `agent.relays[0].peerId=${PEER}`)
    expect(agentYaml(objs).relays).toEqual([{ host: '198.51.100.7', peerId: PEER, tcpPort: 4001, udpPort: 4002 }])
    expect(generatedObjects(objs)).toEqual([SECRET, CERT_CONFIGMAP])
    expect(mountedObjects(agent(objs))).not.toContain(CERT_CONFIGMAP)
    expect(serverYaml(objs).identityFile).toBe('/etc/edgemesh/relay.key')
  })

  it('without the relay (server.enabled=false) nothing is generated', async () => {
    const objs = await render('server.enabled=false', 'psk.enabled=false', 'agent.relays[0].host=198.51.100.7', `agent.relays[0].peerId=${PEER}`)
    expect(generatedObjects(objs)).toEqual([])
    expect(find(objs, 'Deployment', 'em-edgemesh-server')).toBeUndefined()
  })
})
