// Kubernetes credentials: kubeconfig parsing (current context, inline or file data, tokens),
// the apiServer override for edge nodes, and errors that name the field.
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadKubeCredentials } from '../../agent/catalog/kube-client.ts'
import { AgentConfig, ConfigError } from '../../shared/config.ts'

let dir: string
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'edgemesh-kc-')) })
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

const kubeconfig = (user: string, cluster = 'server: https://10.0.0.1:6443, certificate-authority-data: ' + Buffer.from('CA PEM').toString('base64')): string => [
  'apiVersion: v1', 'kind: Config', 'current-context: b',
  'clusters: [{name: c1, cluster: {server: https://wrong:1}}, {name: c2, cluster: {' + cluster + '}}]',
  `users: [{name: u, user: {${user}}}]`,
  'contexts: [{name: a, context: {cluster: c1, user: u}}, {name: b, context: {cluster: c2, user: u}}]', ''].join('\n')

describe('loadKubeCredentials', () => {
  it('follows current-context and decodes inline data', async () => {
    const file = join(dir, 'token.kubeconfig')
    await writeFile(file, kubeconfig('token: abc'))
    const c = await loadKubeCredentials(file)
    expect(c.server).toBe('https://10.0.0.1:6443')
    expect(c.token).toBe('abc')
    expect(c.ca?.toString()).toBe('CA PEM')
  })

  it('reads client certificates from files relative to the kubeconfig', async () => {
    await writeFile(join(dir, 'client.crt'), 'CERT')
    await writeFile(join(dir, 'client.key'), 'KEY')
    const file = join(dir, 'cert.kubeconfig')
    await writeFile(file, kubeconfig('client-certificate: client.crt, client-key: client.key'))
    const c = await loadKubeCredentials(file)
    expect([c.cert?.toString(), c.key?.toString(), c.token]).toEqual(['CERT', 'KEY', undefined])
  })

  it('lets kubernetes.apiServer replace the server (edge nodes cannot reach the ClusterIP)', async () => {
    const file = join(dir, 'override.kubeconfig')
    await writeFile(file, kubeconfig('tokenFile: /var/run/token'))
    const c = await loadKubeCredentials(file, 'https://203.0.113.5:6443/')
    expect(c.server).toBe('https://203.0.113.5:6443')
    expect(c.tokenFile).toBe('/var/run/token')
  })

  it('explains what is wrong, naming the field', async () => {
    const file = join(dir, 'exec.kubeconfig')
    await writeFile(file, kubeconfig('exec: {command: aws}'))
    await expect(loadKubeCredentials(file)).rejects.toThrow(/kubernetes.kubeconfig: .*exec and auth-provider plugins are not supported/)
    await writeFile(file, kubeconfig('token: x').replace('current-context: b', 'current-context: nope'))
    await expect(loadKubeCredentials(file)).rejects.toThrow(/has no context "nope"/)
    await expect(loadKubeCredentials(join(dir, 'missing'))).rejects.toThrow(/kubernetes.kubeconfig: cannot read/)
    const saved = process.env.KUBERNETES_SERVICE_HOST
    delete process.env.KUBERNETES_SERVICE_HOST
    try {
      await expect(loadKubeCredentials(undefined)).rejects.toThrow(/not running in a pod .*kubernetes.apiServer/)
    } finally {
      if (saved != null) process.env.KUBERNETES_SERVICE_HOST = saved
    }
  })

  it('an unreadable certificate, key or CA file, or a malformed kubeconfig, is a one-line ConfigError naming kubernetes.kubeconfig and the file', async () => {
    const file = join(dir, 'missing-cert.kubeconfig')
    await writeFile(file, kubeconfig('client-certificate: nope.crt, client-key: client.key'))
    let err = await loadKubeCredentials(file).catch((e: unknown) => e as Error)
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as Error).message).toMatch(new RegExp(`^kubernetes\\.kubeconfig: ${file}: cannot read client-certificate ${dir}/nope\\.crt: ENOENT[^\\n]*$`))
    await writeFile(file, kubeconfig('token: x', 'server: https://10.0.0.1:6443, certificate-authority: /nonexistent/ca.crt'))
    err = await loadKubeCredentials(file).catch((e: unknown) => e as Error)
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as Error).message).toMatch(new RegExp(`^kubernetes\\.kubeconfig: ${file}: cannot read certificate-authority /nonexistent/ca\\.crt: ENOENT[^\\n]*$`))
    await writeFile(join(dir, 'ok.crt'), 'CERT')
    await writeFile(file, kubeconfig(`client-certificate: ok.crt, client-key: ${dir}`)) // a directory: EISDIR
    err = await loadKubeCredentials(file).catch((e: unknown) => e as Error)
    expect((err as Error).message).toMatch(new RegExp(`^kubernetes\\.kubeconfig: ${file}: cannot read client-key ${dir}: EISDIR[^\\n]*$`))
    await writeFile(file, 'clusters: [\n')
    err = await loadKubeCredentials(file).catch((e: unknown) => e as Error)
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as Error).message).toMatch(new RegExp(`^kubernetes\\.kubeconfig: ${file} is not valid YAML: [^\\n]+ at line \\d+, column \\d+$`))
    for (const text of ['- a\n', 'just text\n']) {
      await writeFile(file, text)
      err = await loadKubeCredentials(file).catch((e: unknown) => e as Error)
      expect((err as Error).message).toBe(`kubernetes.kubeconfig: ${file} is not a kubeconfig (expected a YAML mapping with clusters, users and contexts)`)
    }
  })

  it('validates the kubernetes config section', () => {
    const base = { nodeName: 'n1', relays: [{ host: '203.0.113.1', peerId: '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN' }] }
    const ok = AgentConfig.parse({ ...base, kubernetes: {} })
    expect(ok.kubernetes).toMatchObject({ namespace: 'edgemesh', snapshotFile: '/var/lib/edgemesh/catalog.json', leaseDurationSeconds: 40, watchIdleSeconds: 150 })
    const bad = AgentConfig.safeParse({ ...base, kubernetes: { apiServer: 'ftp://x', namespace: 'Bad_NS' } })
    expect(bad.success).toBe(false)
    const paths = bad.error!.issues.map((i) => i.path.join('.'))
    expect(paths).toEqual(expect.arrayContaining(['kubernetes.apiServer', 'kubernetes.namespace']))
  })
})
