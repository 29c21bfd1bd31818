// The values table of the chart's README.md (what Artifact Hub and KubeSphere's app store show),
// made from values.yaml: one row per setting with its default and its `# --` comment (the helm-docs
// convention values.yaml follows). `node test/chart/values-table.ts` rewrites the table between the
// README's markers; test/integration/chart-store.test.ts fails when the table is stale.
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { isMap, isPair, isScalar, isSeq, parseDocument, type Node, type Pair } from 'yaml'

export const CHART_README = fileURLToPath(new URL('../../manifests/helm/edgemesh/README.md', import.meta.url))
export const CHART_VALUES = fileURLToPath(new URL('../../manifests/helm/edgemesh/values.yaml', import.meta.url))
export const TABLE_START = '<!-- values-table:start (node test/chart/values-table.ts) -->'
export const TABLE_END = '<!-- values-table:end -->'

/** The `# --` description in a comment block: from its `--` line to the end, as one line. */
function description (comment: string | null | undefined): string {
  if (comment == null) return ''
  const lines = comment.split('\n')
  const start = lines.findIndex((l) => /^\s*-- /.test(l))
  if (start < 0) return ''
  return lines.slice(start).map((l) => l.trim()).filter((l) => !l.startsWith('@'))
    .join(' ').replace(/^-- /, '').replace(/\s+/g, ' ').trim()
}

const cell = (s: string): string => s.replace(/\|/g, '\\|')

/**
 * Maps whose keys are the user's (labels, resources, Kubernetes objects passed through): the schema
 * leaves them open, and the table shows each as one setting with its whole default.
 */
export const FREE_FORM: ReadonlySet<string> = new Set(['labels', 'annotations', 'commonLabels', 'podLabels', 'podAnnotations',
  'nodeSelector', 'affinity', 'resources', 'limits', 'extraConfig', 'securityContext', 'podSecurityContext',
  'startupProbe', 'livenessProbe', 'readinessProbe', 'updateStrategy', 'global'])

/** One row per leaf (scalar, list or empty map) of values.yaml, in file order. */
export function valuesRows (valuesYaml: string): Array<{ key: string, default: string, description: string }> {
  const doc = parseDocument(valuesYaml)
  const rows: Array<{ key: string, default: string, description: string }> = []
  const walk = (node: Node | null, path: string, inherited: string): void => {
    if (!isMap(node)) return
    node.items.forEach((pair: Pair, i: number) => {
      if (!isPair(pair) || !isScalar(pair.key)) return
      const key = `${path}${String(pair.key.value)}`
      // the first key's comment sits on the map (or the document) in yaml's tree
      const comment = pair.key.commentBefore ?? (i === 0 ? inherited : undefined)
      const value = pair.value as Node | null
      if (isMap(value) && value.items.length > 0 && !FREE_FORM.has(String(pair.key.value))) {
        walk(value, `${key}.`, value.commentBefore ?? '')
        return
      }
      const js = isSeq(value) || isMap(value) ? value.toJSON() : isScalar(value) ? value.value : null
      rows.push({ key, default: JSON.stringify(js), description: description(comment) })
    })
  }
  walk(doc.contents as Node, '', '')
  return rows
}

export function valuesTable (valuesYaml: string): string {
  const lines = ['| Key | Default | Description |', '|---|---|---|']
  for (const r of valuesRows(valuesYaml)) lines.push(`| \`${r.key}\` | \`${cell(r.default)}\` | ${cell(r.description)} |`)
  return lines.join('\n')
}

/** The README with its table replaced. */
export function withTable (readme: string, table: string): string {
  const start = readme.indexOf(TABLE_START)
  const end = readme.indexOf(TABLE_END)
  if (start < 0 || end < start) throw new Error(`README.md has no ${TABLE_START} ... ${TABLE_END} markers`)
  return `${readme.slice(0, start + TABLE_START.length)}\n${table}\n${readme.slice(end)}`
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const readme = readFileSync(CHART_README, 'utf8')
  writeFileSync(CHART_README, withTable(readme, valuesTable(readFileSync(CHART_VALUES, 'utf8'))))
  console.log(`${CHART_README}: ${valuesRows(readFileSync(CHART_VALUES, 'utf8')).length} values`)
}
