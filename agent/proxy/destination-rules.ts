// Istio DestinationRules (networking.istio.io/v1) for the proxy's load-balancing policy. The
// CRD is optional: while the API group is absent the watcher checks again every minute instead
// of failing the agent or flooding the log.
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from '../../shared/logging.ts'
import type { Metrics } from '../../shared/metrics.ts'
import { KubeApiError, type KubeClient } from '../catalog/kube-client.ts'
import { runReflector, type ResourceSpec } from '../catalog/reflector.ts'
import { parseDestinationRule, type DestinationRuleInfo } from './lb.ts'

const GROUP_PATH = '/apis/networking.istio.io/v1'
const ABSENT_RECHECK_MS = 60_000

export class DestinationRuleWatcher {
  private readonly rules = new Map<string, DestinationRuleInfo>()
  private readonly abort = new AbortController()
  private running: Promise<void> | undefined
  private readonly onChange: () => void

  constructor (onChange: () => void) { this.onChange = onChange }

  list (): Iterable<DestinationRuleInfo> { return this.rules.values() }

  start (client: KubeClient, log: Logger, metrics: Metrics): void {
    const signal = this.abort.signal
    const spec = {
      kind: 'destinationRules', path: `${GROUP_PATH}/destinationrules`,
      transform: parseDestinationRule,
      keyOf: (o: any) => `${String(o?.metadata?.namespace ?? '')}/${String(o?.metadata?.name ?? '')}`
    } as unknown as ResourceSpec<'services'>
    const keyOf = (r: DestinationRuleInfo): string => `${r.namespace}/${r.name}`
    const sink = {
      replace: (_k: unknown, items: unknown[]) => {
        this.rules.clear()
        for (const r of items as DestinationRuleInfo[]) this.rules.set(keyOf(r), r)
        this.onChange()
      },
      upsert: (_k: unknown, item: unknown) => { this.rules.set(keyOf(item as DestinationRuleInfo), item as DestinationRuleInfo); this.onChange() },
      remove: (_k: unknown, key: string) => { if (this.rules.delete(key)) this.onChange() },
      listed: () => {},
      failed: () => {}
    }
    this.running = (async () => {
      let told = false
      while (!signal.aborted) {
        try {
          await client.request('GET', GROUP_PATH, undefined, { signal })
        } catch (err) {
          if (signal.aborted) return
          if (err instanceof KubeApiError && err.status === 404) {
            if (!told) log.info('no DestinationRule API (networking.istio.io/v1) in this cluster; Services use their default policy. Checking again every minute')
            told = true
            try { await sleep(ABSENT_RECHECK_MS, undefined, { signal }) } catch { return }
            continue
          }
          // anything else (API down): let the reflector's own backoff handle it
        }
        log.info('watching Istio DestinationRules')
        await runReflector(spec, sink as any, { client, log, metrics, signal, maxBackoffMs: 60_000 })
        return
      }
    })()
  }

  async stop (): Promise<void> {
    this.abort.abort()
    await this.running?.catch(() => {})
  }
}
