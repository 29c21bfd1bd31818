// Rolling updates and uninstall as the manifests set them up (rendered with the real helm, and the
// plain YAML): agents roll one node at a time, each new pod reuses the node's key from the
// hostPath (so its peer record keeps its content), and the kubelet gives a stopping agent the time
// its clean exit needs to remove its rules and bridge (test/e2e/clean-exit.test.ts measures it).
import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { parse as parseYaml } from 'yaml'
import { parseManifests, renderChart } from '../controlplane/cluster.ts'

type Obj = Record<string, any>
const PLAIN = new URL('../../manifests/plain/edgemesh.yaml', import.meta.url)
const agentDs = (objs: Obj[]): Obj => objs.find((o) => o.kind === 'DaemonSet')!
const agentYaml = (objs: Obj[]): Obj => parseYaml(objs.find((o) => o.kind === 'ConfigMap' && /agent$/.test(o.metadata.name))!.data['agent.yaml'])

describe('agent rolls and stops', () => {
  it('the chart and the plain manifest: one node at a time, 30 s for the clean exit, the node key on the node', async () => {
    const chart = await renderChart({ args: ['--set', 'relay.peerId='] })
    const plain = parseManifests(await readFile(PLAIN, 'utf8'), 'plain')
    for (const [name, objs] of [['chart', chart], ['plain', plain]] as const) {
      const ds = agentDs(objs)
      expect(ds.spec.updateStrategy, name).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } })
      expect(ds.spec.template.spec.terminationGracePeriodSeconds, name).toBe(30)
      // the identity key survives the pod: a hostPath, so the new pod has the same peer id
      const identityDir = (agentYaml(objs).identityFile as string).replace(/\/[^/]+$/, '')
      const mount = (ds.spec.template.spec.containers[0].volumeMounts as Obj[]).find((m) => m.mountPath === identityDir)!
      const volume = (ds.spec.template.spec.volumes as Obj[]).find((v) => v.name === mount.name)!
      expect(volume.hostPath, name).toEqual({ path: '/var/lib/edgemesh', type: 'DirectoryOrCreate' })
    }
  })

  it('agent.terminationGracePeriodSeconds reaches the pod; the schema takes integers only', async () => {
    const objs = await renderChart({ args: ['--set', 'agent.terminationGracePeriodSeconds=90'] })
    expect(agentDs(objs).spec.template.spec.terminationGracePeriodSeconds).toBe(90)
    const err = await renderChart({ args: ['--set', 'agent.terminationGracePeriodSeconds=soon'] }).then(() => undefined, (e: Error) => e)
    expect(err?.message).toContain("at '/agent/terminationGracePeriodSeconds': got string, want integer")
  })
})
