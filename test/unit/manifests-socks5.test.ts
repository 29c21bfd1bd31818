// SOCKS5 in the deployment manifests: the plain manifest's commented socks5 block and Secret
// mount, uncommented, are a valid agent config whose credential files the Secret provides; the
// chart (rendered with the real helm) is off by default, renders the same section when on, adds
// NET_ADMIN (its address on the bridge) and mounts the credentials from a Secret, never the
// ConfigMap; values.schema.json accepts what values.yaml has and refuses unknown keys.
import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import { AgentConfig } from '../../shared/config.ts'
import { parseManifests, renderChart } from '../controlplane/cluster.ts'

type Obj = Record<string, any>
const ROOT = new URL('../../', import.meta.url)
const DEFAULTS = { listen: ['169.254.96.16:10800'], nodeSuffix: 'edge', allowedPorts: [22], services: true, handshakeTimeoutMs: 10_000, connectTimeoutMs: 15_000, maxConnections: 1_024 }
const AUTH = { usernameFile: '/etc/edgemesh-socks5/username', passwordFile: '/etc/edgemesh-socks5/password' }

const agentDs = (objs: Obj[]): Obj => objs.find((o) => o.kind === 'DaemonSet' && /agent$/.test(o.metadata.name))!
const agentContainer = (objs: Obj[]): Obj => (agentDs(objs).spec.template.spec.containers as Obj[]).find((c) => c.name === 'agent')!
const agentYaml = (objs: Obj[]): Obj => parseYaml(objs.find((o) => o.kind === 'ConfigMap' && /agent$/.test(o.metadata.name))!.data['agent.yaml'])
const parsed = (raw: Obj): AgentConfig => AgentConfig.parse({ ...raw, nodeName: 'edge-node-1' })
/** The Secret items a volume mounted at `dir` provides, as { file: key }. */
function secretFilesAt (objs: Obj[], dir: string): { secret: string, files: Record<string, string> } | undefined {
  const mount = (agentContainer(objs).volumeMounts as Obj[]).find((m) => m.mountPath === dir)
  if (mount == null) return undefined
  expect(mount.readOnly).toBe(true)
  const vol = (agentDs(objs).spec.template.spec.volumes as Obj[]).find((v) => v.name === mount.name)!
  return { secret: vol.secret.secretName, files: Object.fromEntries((vol.secret.items as Obj[]).map((i) => [i.path, i.key])) }
}

describe('plain manifest: SOCKS5', () => {
  it('is off; uncommenting its block and the socks5-auth volume and mount gives a valid config whose credential files come from the Secret', async () => {
    const text = await readFile(new URL('manifests/plain/edgemesh.yaml', ROOT), 'utf8')
    const docs = parseManifests(text, 'plain')
    expect(agentYaml(docs).socks5).toBeUndefined()
    // uncomment: the socks5 block in agent.yaml, the mount and the volume in the DaemonSet
    const lines = text.split('\n')
    const start = lines.findIndex((l) => l === '    # socks5:')
    expect(start).toBeGreaterThan(0)
    for (let i = start; lines[i]!.startsWith('    # '); i++) lines[i] = lines[i]!.replace('    # ', '    ')
    let uncommented = lines.join('\n')
    uncommented = uncommented.replace(/^(\s+)# (- name: socks5-auth)$/gm, '$1$2').replace(/^(\s+)# (\s*(mountPath|readOnly|secret|secretName|items|- key|path|defaultMode):.*)$/gm, '$1$2')
    const on = parseManifests(uncommented, 'plain, uncommented')
    const c = parsed(agentYaml(on))
    expect(c.socks5).toMatchObject({ ...DEFAULTS, enabled: true, auth: AUTH })
    expect(secretFilesAt(on, '/etc/edgemesh-socks5')).toEqual({ secret: 'edgemesh-socks5', files: { username: 'username', password: 'password' } })
    // the plain manifest already adds NET_ADMIN (DNS, proxy): the bridge address needs nothing more
    expect(agentContainer(on).securityContext.capabilities.add).toContain('NET_ADMIN')
  })
})

describe('helm chart: SOCKS5', () => {
  const render = async (...set: string[]): Promise<Obj[]> => await renderChart({ args: set.flatMap((s) => ['--set', s]) })

  it('off by default: no socks5 section, no credentials mount', async () => {
    const objs = await render()
    expect(agentYaml(objs).socks5).toBeUndefined()
    expect(secretFilesAt(objs, '/etc/edgemesh-socks5')).toBeUndefined()
  })

  it('on: the section with every values.yaml key, valid for AgentConfig; NET_ADMIN even with DNS and the proxy off; no auth without a Secret', async () => {
    const objs = await render('agent.socks5.enabled=true', 'agent.dns.enabled=false', 'agent.proxy.enabled=false')
    expect(agentYaml(objs).socks5).toEqual(DEFAULTS)
    expect(parsed(agentYaml(objs)).socks5).toMatchObject({ ...DEFAULTS, enabled: true, device: 'edgemesh0', acceptFromPeers: true })
    expect(agentContainer(objs).securityContext.capabilities.add).toEqual(['NET_ADMIN'])
    expect(secretFilesAt(objs, '/etc/edgemesh-socks5')).toBeUndefined()
  })

  it('auth from an existing Secret: files mounted read-only at the paths agent.yaml names, nothing secret in the ConfigMap', async () => {
    const objs = await render('agent.socks5.enabled=true', 'agent.socks5.auth.existingSecret=ops-socks', 'agent.socks5.auth.passwordKey=pw', 'agent.socks5.nodeSuffix=mesh', 'agent.socks5.allowedPorts[0]=2222')
    const c = parsed(agentYaml(objs))
    expect(c.socks5).toMatchObject({ auth: AUTH, nodeSuffix: 'mesh', allowedPorts: [2222] })
    expect(secretFilesAt(objs, '/etc/edgemesh-socks5')).toEqual({ secret: 'ops-socks', files: { username: 'username', password: 'pw' } })
    const cm = JSON.stringify(objs.filter((o) => o.kind === 'ConfigMap'))
    expect(cm).not.toMatch(/ops-socks/)
    // the mount is its own directory, not nested in the projected /etc/edgemesh volume
    for (const m of agentContainer(objs).volumeMounts as Obj[]) expect('/etc/edgemesh-socks5'.startsWith(`${m.mountPath as string}/`)).toBe(false)
  })

  it('values.schema.json: agent.socks5 takes what values.yaml has, nothing else', async () => {
    const chart = new URL('manifests/helm/edgemesh/', ROOT)
    const values = parseYaml(await readFile(new URL('values.yaml', chart), 'utf8'))
    const validate = z.fromJSONSchema(JSON.parse(await readFile(new URL('values.schema.json', chart), 'utf8')))
    values.relay.announce = ['203.0.113.10']
    const ok = (edit: (s: Obj) => void): boolean => { const v = structuredClone(values); edit(v.agent.socks5); return validate.safeParse(v).success }
    expect(ok(() => {})).toBe(true)
    expect(ok((s) => { s.enabled = true; s.listen = ['127.0.0.1:10800']; s.auth.existingSecret = 'x' })).toBe(true)
    expect(ok((s) => { s.bogus = 1 })).toBe(false)
    expect(ok((s) => { s.allowedPorts = [0] })).toBe(false)
    expect(ok((s) => { s.allowedPorts = [] })).toBe(false)
    expect(ok((s) => { s.listen = ['169.254.96.16'] })).toBe(false)
    expect(ok((s) => { s.auth.password = 'inline' })).toBe(false)
  })
})
