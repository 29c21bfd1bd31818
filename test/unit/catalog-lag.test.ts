// edgemesh_catalog_lag_seconds: 0 while a resource's watch is open, growing from the last time
// the API was heard (or the disk snapshot was saved) once its list/watch fails.
import { describe, expect, it } from 'vitest'
import { CatalogLag } from '../../agent/catalog/lag.ts'
import { Metrics } from '../../shared/metrics.ts'

const T0 = 1_800_000_000_000

describe('catalog lag', () => {
  it('counts from agent start until the API is first heard, then is 0 while the watch is open', () => {
    const lag = new CatalogLag(['services', 'peers'], T0)
    expect(lag.lagSeconds('services', T0 + 5_000)).toBe(5)
    lag.heard('services', T0 + 6_000)
    expect(lag.lagSeconds('services', T0 + 60_000)).toBe(0)
    expect(lag.lagSeconds('peers', T0 + 60_000)).toBe(60)
  })

  it('grows from the last time the API was heard once the list/watch fails, and drops to 0 when it answers again', () => {
    const lag = new CatalogLag(['services'], T0)
    lag.heard('services', T0 + 1_000)
    lag.heard('services', T0 + 10_000) // a bookmark
    lag.lost('services')
    expect(lag.lagSeconds('services', T0 + 12_500)).toBe(2.5)
    lag.lost('services') // retries failing do not reset the clock
    expect(lag.lagSeconds('services', T0 + 40_000)).toBe(30)
    lag.heard('services', T0 + 41_000)
    expect(lag.lagSeconds('services', T0 + 41_000)).toBe(0)
  })

  it('a resource served from disk lags from the time the snapshot was saved; a live one ignores the disk', () => {
    const lag = new CatalogLag(['services', 'peers'], T0)
    lag.heard('peers', T0)
    lag.fromDisk('services', T0 - 3_600_000)
    lag.fromDisk('peers', T0 - 3_600_000)
    expect(lag.lagSeconds('services', T0)).toBe(3600)
    expect(lag.lagSeconds('peers', T0)).toBe(0)
  })

  it('is exported per resource, computed at scrape time', async () => {
    const metrics = new Metrics({ processMetrics: false })
    const lag = new CatalogLag(['services', 'peers'], Date.now() - 90_000)
    lag.heard('peers')
    lag.export(metrics)
    const text = await metrics.registry.metrics()
    expect(text).toContain('# TYPE edgemesh_catalog_lag_seconds gauge')
    const services = Number(/edgemesh_catalog_lag_seconds\{resource="services"\} (\S+)/.exec(text)?.[1])
    expect(services).toBeGreaterThanOrEqual(90)
    expect(services).toBeLessThan(3600) // a bound a loaded machine cannot break
    expect(text).toContain('edgemesh_catalog_lag_seconds{resource="peers"} 0')
  })
})
