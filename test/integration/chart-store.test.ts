// The Helm chart as an app store takes it (Artifact Hub, KubeSphere's app store), checked with the
// real helm (`npm run controlplane` builds it): `helm lint --strict` is clean, values.schema.json
// (draft-07) names the field of a typo'd key or a wrong type, values.yaml and the schema list the
// same keys, every rendered object carries the app.kubernetes.io labels and helm.sh/chart, and
// Chart.yaml has the metadata the stores read.
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { cp, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { parse as parseYaml } from 'yaml'
import { HELM_BIN } from '../controlplane/harness.ts'
import { CHART_DIR, KUBE_VERSION, parseManifests, type KubeObject } from '../controlplane/cluster.ts'
import { CHART_README, FREE_FORM, TABLE_END, TABLE_START, valuesTable } from '../chart/values-table.ts'

type Obj = Record<string, any>
const ROOT = new URL('../../', import.meta.url)
const ANNOUNCE = ['--set', 'relay.announce[0]=203.0.113.10']
/** the cluster version the chart is rendered for (the harness's apiserver) */
const KUBE = ['--kube-version', KUBE_VERSION]
/** every label the stores and `kubectl get -l` rely on, on every object */
const REQUIRED_LABELS = ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/version',
  'app.kubernetes.io/managed-by', 'app.kubernetes.io/component', 'app.kubernetes.io/part-of', 'helm.sh/chart']
/** workload selectors: stable labels only (a changed selector makes `helm upgrade` fail) */
const SELECTOR_LABELS = ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/component']

/** schema keys values.yaml deliberately does not list, and why */
const SCHEMA_ONLY: Record<string, string> = {
  global: 'Helm passes global values to a subchart',
  'psk.create': 'ignored, accepted so values reused from releases older than the generated PSK still validate',
  'server.limits.*': 'optional relay limits, listed in the values.yaml comment (unset: the binary\'s defaults)'
}

async function helm (args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  const home = await mkdtemp(join(tmpdir(), 'edgemesh-helm-'))
  try {
    return await new Promise((resolve) => {
      execFile(HELM_BIN, args, {
        env: { ...process.env, HELM_CACHE_HOME: join(home, 'cache'), HELM_CONFIG_HOME: join(home, 'config'), HELM_DATA_HOME: join(home, 'data') },
        maxBuffer: 16 * 1024 * 1024
      }, (err: any, stdout, stderr) => { resolve({ code: err == null ? 0 : (err.code ?? 1), stdout, stderr }) })
    })
  } finally {
    await rm(home, { recursive: true, force: true })
  }
}

const template = async (args: string[]): Promise<{ code: number, stdout: string, stderr: string }> =>
  await helm(['template', 'mesh', CHART_DIR, '--namespace', 'edgemesh', ...KUBE, ...args])

async function render (args: string[]): Promise<KubeObject[]> {
  const r = await template([...ANNOUNCE, ...args])
  expect(r.stderr, `helm template ${args.join(' ')}`).toBe('')
  expect(r.code).toBe(0)
  return parseManifests(r.stdout, 'helm template')
}

let values: Obj
let schema: Obj
let chart: Obj
beforeAll(async () => {
  values = parseYaml(await readFile(join(CHART_DIR, 'values.yaml'), 'utf8'))
  schema = JSON.parse(await readFile(join(CHART_DIR, 'values.schema.json'), 'utf8'))
  chart = parseYaml(await readFile(join(CHART_DIR, 'Chart.yaml'), 'utf8'))
})

const isMap = (v: unknown): v is Obj => v != null && typeof v === 'object' && !Array.isArray(v)

/** The schema node for an object value: $refs followed, and of anyOf/oneOf the branches that take objects. */
function resolve (node: Obj | undefined): Obj[] {
  if (node == null) return []
  if (typeof node.$ref === 'string') return resolve(schema.definitions[node.$ref.replace('#/definitions/', '')])
  const branches = node.anyOf ?? node.oneOf
  if (Array.isArray(branches)) return branches.flatMap((b: Obj) => resolve(b)).filter((b) => b.type == null || [b.type].flat().includes('object'))
  return [node]
}

describe('values.yaml and values.schema.json list the same keys', () => {
  it('every values.yaml key is in the schema', () => {
    const missing: string[] = []
    const walk = (v: Obj, nodes: Obj[], path: string): void => {
      for (const [k, child] of Object.entries(v)) {
        if (!nodes.some((n) => n.properties?.[k] != null)) {
          if (!nodes.some((n) => n.additionalProperties !== false)) missing.push(`${path}${k}`)
          continue
        }
        if (isMap(child)) walk(child, nodes.flatMap((n) => resolve(n.properties?.[k])), `${path}${k}.`)
      }
    }
    walk(values, [schema], '')
    expect(missing, 'values.yaml keys missing in values.schema.json (add them under "properties")').toEqual([])
  })

  it('every schema key is in values.yaml (or listed in SCHEMA_ONLY with its reason)', () => {
    const extra: string[] = []
    const walk = (nodes: Obj[], v: Obj | undefined, path: string): void => {
      for (const n of nodes) {
        for (const [k, sub] of Object.entries<Obj>(n.properties ?? {})) {
          const key = `${path}${k}`
          if (key in SCHEMA_ONLY || `${path}*` in SCHEMA_ONLY) continue
          if (v == null || !(k in v)) { extra.push(key); continue }
          if (isMap(v[k])) walk(resolve(sub), v[k], `${key}.`)
        }
      }
    }
    walk([schema], values, '')
    expect(extra, 'values.schema.json keys missing in values.yaml (add them with their default, or drop them from the schema)').toEqual([])
  })

  // Any object of values.yaml but the user's maps (FREE_FORM) must be closed (additionalProperties:
  // false), so a typo'd key fails the install instead of being ignored.
  it('every object of values.yaml is closed in the schema (additionalProperties: false) unless its keys are the user\'s', () => {
    const open: string[] = []
    const closedFree: string[] = []
    const walk = (v: Obj, nodes: Obj[], path: string): void => {
      for (const [k, child] of Object.entries(v)) {
        if (!isMap(child)) continue
        const subs = nodes.flatMap((n) => resolve(n.properties?.[k]))
        if (subs.length === 0) continue
        const closed = subs.every((s) => s.additionalProperties === false)
        if (FREE_FORM.has(k)) {
          if (closed && ['labels', 'annotations', 'nodeSelector', 'affinity', 'resources', 'extraConfig'].includes(k)) closedFree.push(`${path}${k}`)
          continue
        }
        if (!closed) open.push(`${path}${k}`)
        walk(child, subs, `${path}${k}.`)
      }
    }
    expect(schema.additionalProperties, 'the top level').toBe(false)
    walk(values, [schema], '')
    expect(open, 'objects whose typos the schema would let through').toEqual([])
    expect(closedFree, 'user maps the schema closes').toEqual([])
  })

  it('the schema is draft-07 (what older Helm in app stores reads)', () => {
    expect(schema.$schema).toBe('http://json-schema.org/draft-07/schema#')
    // keywords of later drafts that draft-07 readers ignore or reject
    const text = JSON.stringify(schema)
    for (const kw of ['$defs', 'unevaluatedProperties', 'dependentRequired', 'dependentSchemas', 'prefixItems', '$anchor']) expect(text, kw).not.toContain(`"${kw}"`)
  })
})

describe('helm lint and the schema, with the real helm', () => {
  it('helm lint --strict with the relay\'s address is clean, and the same values render', async () => {
    // as a user runs it: helm's default Kubernetes version (v1.36 for helm 3.21; test/controlplane/build.sh
    // sets it as helm's Makefile does, else a built helm says v1.20 and the 1.30 check fails the render)
    const lint = await helm(['lint', '--strict', CHART_DIR, ...ANNOUNCE])
    expect(lint.code, lint.stdout + lint.stderr).toBe(0)
    expect(lint.stdout).toContain('1 chart(s) linted, 0 chart(s) failed')
    // no [INFO]/[WARNING]/[ERROR] finding, and no template that failed (lint only logs a `fail`)
    expect(lint.stdout.split('\n').filter((l) => /^\[(INFO|WARNING|ERROR)\]/.test(l))).toEqual([])
    expect(lint.stderr).toBe('')
    const rendered = await render([])
    expect(rendered.map((o) => o.kind)).toEqual(expect.arrayContaining(['Deployment', 'DaemonSet']))
  })

  it('helm lint with the defaults fails, naming relay.announce', async () => {
    const lint = await helm(['lint', '--strict', CHART_DIR, ...KUBE])
    expect(lint.code).not.toBe(0)
    expect(lint.stdout).toContain('/relay/announce')
    const t = await template([])
    expect(t.code).not.toBe(0)
    expect(t.stderr).toContain('/relay/announce')
  })

  const rejects: Array<[string, string[], RegExp]> = [
    ['a typo\'d key', ['--set', 'agent.dns.enabeld=true'], /at '\/agent\/dns': additional properties 'enabeld' not allowed/],
    ['a typo\'d top-level key', ['--set', 'agnet.enabled=true'], /at '': additional properties 'agnet' not allowed/],
    ['a typo\'d server key', ['--set', 'server.persistance.type=pvc'], /at '\/server': additional properties 'persistance' not allowed/],
    ['a string for a port', ['--set-string', 'agent.listen.udpPort=abc'], /at '\/agent\/listen\/udpPort': got string, want integer/],
    ['a word for a boolean', ['--set', 'agent.dns.enabled=maybe'], /at '\/agent\/dns\/enabled': got string, want boolean/],
    ['an unknown log level', ['--set', 'agent.logLevel=verbose'], /at '\/agent\/logLevel'/],
    ['a port out of range', ['--set', 'relay.ports.udp=70000'], /at '\/relay\/ports\/udp'/],
    ['an image pull secret as a string', ['--set', 'imagePullSecrets[0]=regcred'], /at '\/imagePullSecrets\/0': got string, want object/]
  ]
  for (const [what, args, message] of rejects) {
    it(`helm template rejects ${what}, naming the field`, async () => {
      const r = await template([...ANNOUNCE, ...args])
      expect(r.code).not.toBe(0)
      expect(r.stdout).toBe('')
      expect(r.stderr).toContain('values don\'t meet the specifications of the schema')
      expect(r.stderr).toMatch(message)
    })
  }

  it('the free-form maps stay free: labels, resources, probes off, extraConfig, global', async () => {
    const objs = await render(['--set', 'commonLabels.team=edge', '--set', 'agent.resources.limits.cpu=2',
      '--set', 'agent.livenessProbe=null', '--set', 'server.extraConfig.logLevel=debug', '--set', 'global.imageRegistry=example.com',
      '--set', 'agent.nodeSelector.kubernetes\\.io/os=linux', '--set', 'server.service.annotations.a=b'])
    const ds = objs.find((o) => o.kind === 'DaemonSet')!
    expect(ds.metadata?.labels?.team).toBe('edge')
    const agent = ds.spec.template.spec.containers[0]
    expect(agent.resources.limits.cpu).toBe(2)
    expect(agent.livenessProbe).toBeUndefined()
    expect(ds.spec.template.spec.nodeSelector).toEqual({ 'kubernetes.io/os': 'linux' })
  })
})

describe('labels', () => {
  /** every *.enabled flag of values.yaml set to true: every optional object rendered */
  const everythingOn = (): string[] => {
    const flags: string[] = []
    const walk = (v: Obj, path: string): void => {
      for (const [k, child] of Object.entries(v)) {
        if (k === 'enabled' && child !== true && path !== 'agent.kubernetes.') flags.push('--set', `${path}enabled=true`)
        else if (isMap(child)) walk(child, `${path}${k}.`)
      }
    }
    walk(values, '')
    return flags
  }
  const configs: Array<[string, () => string[]]> = [
    ['the defaults', () => []],
    ['every feature on', () => [...everythingOn(), '--api-versions', 'monitoring.coreos.com/v1']],
    ['standalone agents, a relay keeping its own key on a PVC', () => ['--set', 'agent.kubernetes.enabled=false', '--set', 'server.persistence.type=pvc',
      '--set', 'server.identity.generate=false', '--set', 'relay.peerId=12D3KooWPgHATvH9wN3n43y2TgqGQabmPTxmEDX3rUHkRqLbuZAT']]
  ]
  for (const [name, args] of configs) {
    it(`every object carries the app.kubernetes.io labels and helm.sh/chart: ${name}`, async () => {
      const objs = await render(args())
      expect(objs.length).toBeGreaterThan(5)
      const gaps: string[] = []
      for (const o of objs) {
        const id = `${o.kind}/${o.metadata?.name}`
        const labels: Obj = o.metadata?.labels ?? {}
        for (const l of REQUIRED_LABELS) if (labels[l] == null || labels[l] === '') gaps.push(`${id}: ${l}`)
        if (labels['app.kubernetes.io/instance'] !== 'mesh') gaps.push(`${id}: instance ${labels['app.kubernetes.io/instance']}`)
        if (labels['app.kubernetes.io/managed-by'] !== 'Helm') gaps.push(`${id}: managed-by ${labels['app.kubernetes.io/managed-by']}`)
        if (labels['app.kubernetes.io/part-of'] !== 'edgemesh') gaps.push(`${id}: part-of ${labels['app.kubernetes.io/part-of']}`)
        if (labels['app.kubernetes.io/version'] !== chart.appVersion) gaps.push(`${id}: version ${labels['app.kubernetes.io/version']}`)
        if (labels['helm.sh/chart'] !== `edgemesh-${chart.version}`) gaps.push(`${id}: chart ${labels['helm.sh/chart']}`)
        const podLabels: Obj | undefined = o.spec?.template?.metadata?.labels
        if (podLabels != null) for (const l of REQUIRED_LABELS) if (podLabels[l] == null) gaps.push(`${id} pod template: ${l}`)
        const selector: Obj | undefined = o.spec?.selector?.matchLabels
        // a ServiceMonitor/PodMonitor selects the relay's Service and the agents' pods, not pods of its own (chart-observability.test.ts checks those)
        if (selector != null && o.kind !== 'ServiceMonitor' && o.kind !== 'PodMonitor') {
          if (Object.keys(selector).sort().join() !== [...SELECTOR_LABELS].sort().join()) gaps.push(`${id}: selector ${JSON.stringify(selector)}`)
          for (const [k, v] of Object.entries(selector)) if (podLabels?.[k] !== v) gaps.push(`${id}: selector ${k} not on the pods`)
        }
      }
      expect(gaps).toEqual([])
    })
  }

  it('those renders cover every template of the chart', async () => {
    const sources = new Set<string>()
    for (const [, args] of configs) {
      const r = await template([...ANNOUNCE, ...args()])
      for (const m of r.stdout.matchAll(/^# Source: edgemesh\/(templates\/\S+)$/gm)) sources.add(m[1]!)
    }
    const files = (await readdir(join(CHART_DIR, 'templates'), { recursive: true }))
      .filter((f) => /\.(yaml|yml)$/.test(f)).map((f) => `templates/${f}`)
    expect(files.filter((f) => !sources.has(f)), 'templates no labels check rendered (add a config that renders them)').toEqual([])
  })

  it('the Service selects the relay pods by the stable labels', async () => {
    const objs = await render([])
    const svc = objs.find((o) => o.kind === 'Service' && o.metadata?.name === 'mesh-edgemesh-server')!
    expect(svc.spec.selector).toEqual({ 'app.kubernetes.io/name': 'edgemesh', 'app.kubernetes.io/instance': 'mesh', 'app.kubernetes.io/component': 'server' })
  })
})

describe('Chart.yaml: what Artifact Hub and KubeSphere\'s app store read', () => {
  const REPO = 'https://github.com/edgemesh-ts/edgemesh'
  it('icon, home, sources, keywords, maintainers', () => {
    expect(chart.icon).toBe('https://raw.githubusercontent.com/edgemesh-ts/edgemesh/main/manifests/helm/edgemesh/icon.svg')
    // the URL serves this file of the repository
    const iconPath = new URL(chart.icon).pathname.split('/').slice(4).join('/')
    expect(existsSync(new URL(iconPath, ROOT)), iconPath).toBe(true)
    expect(chart.home).toBe(REPO)
    expect(chart.sources).toContain(REPO)
    expect(chart.keywords).toEqual(expect.arrayContaining(['edge', 'service-mesh', 'nat-traversal']))
    expect(chart.maintainers.length).toBeGreaterThan(0)
    for (const m of chart.maintainers) expect(m.name).toBeTruthy()
  })

  it('the icon is a small SVG', async () => {
    const svg = await readFile(join(CHART_DIR, 'icon.svg'), 'utf8')
    expect(svg).toMatch(/^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/)
    expect(svg.length).toBeLessThan(10_000)
  })

  it('artifacthub.io annotations: category, license (the repository\'s), images (the chart\'s image and tag), links, changes', async () => {
    const a: Obj = chart.annotations
    expect(a['artifacthub.io/category']).toBe('networking')
    const pkg = JSON.parse(await readFile(new URL('package.json', ROOT), 'utf8'))
    expect(a['artifacthub.io/license']).toBe(pkg.license)
    expect(await readFile(new URL('LICENSE', ROOT), 'utf8')).toMatch(/Apache License\s+Version 2\.0/)
    expect(a['artifacthub.io/prerelease']).toMatch(/^(true|false)$/)
    expect(a['artifacthub.io/containsSecurityUpdates']).toBe('false')
    const images = parseYaml(a['artifacthub.io/images'])
    expect(images).toEqual([{ name: 'edgemesh', image: `${values.image.repository}:${chart.appVersion}` }])
    const links = parseYaml(a['artifacthub.io/links'])
    expect(links.length).toBeGreaterThan(0)
    for (const l of links) { expect(l.name).toBeTruthy(); expect(l.url).toMatch(/^https:\/\//) }
    const changes = parseYaml(a['artifacthub.io/changes'])
    for (const c of changes) expect(['added', 'changed', 'deprecated', 'removed', 'fixed', 'security']).toContain(c.kind)
  })

  it('kubeVersion admits the standalone mode\'s 1.26; Kubernetes mode refuses clusters older than 1.30, saying so', async () => {
    expect(chart.kubeVersion).toBe('>=1.26.0-0')
    const old = await helm(['template', 'mesh', CHART_DIR, '--kube-version', '1.29.0', ...ANNOUNCE])
    expect(old.code).not.toBe(0)
    expect(old.stderr).toContain('agent.kubernetes.enabled needs Kubernetes >= 1.30')
    const tooOld = await helm(['template', 'mesh', CHART_DIR, '--kube-version', '1.25.0', ...ANNOUNCE])
    expect(tooOld.stderr).toContain('chart requires kubeVersion: >=1.26.0-0')
  })

  it('a README.md in the chart: the one install command, and the values table of the current values.yaml', async () => {
    const readme = await readFile(CHART_README, 'utf8')
    expect(readme).toMatch(/^helm install \S+ .* --set relay\.announce\[0\]=\S+$/m)
    const table = readme.slice(readme.indexOf(TABLE_START) + TABLE_START.length, readme.indexOf(TABLE_END)).trim()
    const expected = valuesTable(await readFile(join(CHART_DIR, 'values.yaml'), 'utf8'))
    // stale after a values.yaml edit: `node test/chart/values-table.ts` rewrites it
    const rows = (text: string): string[] => text.split('\n').filter((l) => l.startsWith('| `'))
    const have = new Set(rows(table))
    const want = new Set(rows(expected))
    expect(rows(table).filter((l) => !want.has(l)), 'README rows not in values.yaml (run node test/chart/values-table.ts)').toEqual([])
    expect(rows(expected).filter((l) => !have.has(l)), 'values.yaml rows missing in README (run node test/chart/values-table.ts)').toEqual([])
    expect(table.startsWith('| Key | Default | Description |')).toBe(true)
  })
})

describe('NOTES.txt: the next steps after install', () => {
  /** NOTES.txt as `helm install` prints it: `helm template` skips it, so a copy of the chart renders it into a ConfigMap */
  async function notes (args: string[]): Promise<{ text: string, objs: KubeObject[] }> {
    const dir = await mkdtemp(join(tmpdir(), 'edgemesh-notes-'))
    try {
      await cp(CHART_DIR, join(dir, 'edgemesh'), { recursive: true })
      const tpl = join(dir, 'edgemesh', 'templates')
      await writeFile(join(tpl, '_notes-under-test.tpl'), `{{- define "notes.under.test" -}}\n${await readFile(join(tpl, 'NOTES.txt'), 'utf8')}\n{{- end }}\n`)
      await writeFile(join(tpl, 'notes-under-test.yaml'), 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-under-test\ndata:\n  notes: {{ include "notes.under.test" . | quote }}\n')
      const r = await helm(['template', 'mesh', join(dir, 'edgemesh'), '--namespace', 'edgemesh', ...KUBE, ...ANNOUNCE, ...args])
      expect(r.stderr).toBe('')
      const objs = parseManifests(r.stdout, 'helm template')
      const text: string = objs.find((o) => o.metadata?.name === 'notes-under-test')!.data.notes
      return { text, objs: objs.filter((o) => o.metadata?.name !== 'notes-under-test') }
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  }
  const named = (objs: KubeObject[], kind: string): string[] => objs.filter((o) => o.kind === kind).map((o) => o.metadata!.name!)

  it('defaults: pin the relay, pods, edgemesh status, helm test, how to turn SOCKS5 on, the PSK Secret, another cluster\'s agents', async () => {
    const { text, objs } = await notes([])
    expect(text).not.toContain('<no value>')
    expect(text).not.toMatch(/\n\s*\n\s*\n/)
    const steps = text.slice(text.indexOf('NEXT STEPS'), text.indexOf('RELAY'))
    expect(steps).toContain('--set server.nodeSelector."kubernetes\\.io/hostname"=<relay-node>')
    // the selectors and names in the commands are the rendered objects'
    const ds = objs.find((o) => o.kind === 'DaemonSet')!
    const podLabels: Obj = ds.spec.template.metadata.labels
    const selector = /get pod -l (\S+) --field-selector spec\.nodeName=<node> -o name\) -- node bin\/edgemesh\.js status/.exec(steps)
    expect(selector, 'edgemesh status in an agent pod').not.toBeNull()
    for (const kv of selector![1]!.split(',')) { const [k, v] = kv.split('='); expect(podLabels[k!], kv).toBe(v) }
    expect(steps).toContain('kubectl -n edgemesh get pods -l app.kubernetes.io/instance=mesh -o wide')
    expect(steps).toContain('helm test mesh -n edgemesh')
    expect(steps).toContain('--set agent.socks5.enabled=true')
    expect(steps).toContain('ssh -o "ProxyCommand nc -X 5 -x 169.254.96.16:10800 %h %p" root@<node>')
    // where the PSK is: the Secret the chart renders
    const psk = named(objs, 'Secret').find((n) => n.endsWith('-psk'))!
    expect(text).toContain(`from Secret ${psk}`)
    expect(text).toContain(`kubectl -n edgemesh get secret ${psk} -o jsonpath='{.data.swarm\\.key}' | base64 -d > swarm.key`)
    // the relay's peer id, from the Deployment the chart renders
    expect(named(objs, 'Deployment')).toContain('mesh-edgemesh-server')
    expect(text).toContain('kubectl -n edgemesh logs deploy/mesh-edgemesh-server | grep \'edgemesh-server ready\'')
    // another cluster's agents: its relay address, the PSK copy, no relay of their own
    const other = text.slice(text.indexOf('AGENTS OF ANOTHER CLUSTER'))
    expect(other).toContain('--set server.enabled=false --set psk.existingSecret=edgemesh-psk')
    expect(other).toContain('--set agent.relays[0].host=203.0.113.10 --set agent.relays[0].peerId=<the relay\'s peer id>')
  })

  it('a pinned relay skips that step; SOCKS5 on shows the ssh lines instead of how to turn it on', async () => {
    const { text } = await notes(['--set', 'server.nodeSelector.kubernetes\\.io/hostname=relay-1', '--set', 'agent.socks5.enabled=true'])
    const steps = text.slice(text.indexOf('NEXT STEPS'), text.indexOf('RELAY'))
    expect(steps).not.toContain('server.nodeSelector')
    expect(steps).not.toContain('--set agent.socks5.enabled=true')
    expect(text).toContain('ssh -o "ProxyCommand nc -X 5 -x 169.254.96.16:10800 %h %p" root@<node>')
    expect(text).toContain('SOCKS5 on 169.254.96.16:10800')
  })

  it('without a PSK it warns, and another cluster\'s agents are told psk.enabled=false', async () => {
    const { text, objs } = await notes(['--set', 'psk.enabled=false'])
    expect(named(objs, 'Secret').some((n) => n.endsWith('-psk'))).toBe(false)
    expect(text).toContain('WARNING: psk.enabled=false')
    expect(text).toContain('--set server.enabled=false --set psk.enabled=false')
  })
})

