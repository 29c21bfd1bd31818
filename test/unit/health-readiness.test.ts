// The probe verdicts (agent/health/readiness.ts): which facts make an agent live and ready, and
// the one-line reasons /healthz and /readyz give when it is not.
import { describe, expect, it } from 'vitest'
import { liveness, readiness } from '../../agent/health/readiness.ts'

const NAME = 'kubernetes.default.svc.cluster.local'
const NOT_SYNCED = 'catalog: not synced from the Kubernetes API yet, and no snapshot on disk to serve'

describe('readiness', () => {
  it('is ready with a synced catalog and a NOERROR answer from DNS', () => {
    expect(readiness({ starting: undefined, catalog: { synced: true, source: 'api' }, dns: { name: NAME, result: { rcode: 0, answers: 1 } } })).toEqual({ ok: true, reasons: [] })
    // NODATA (an IPv6-only cluster's kubernetes Service asked for A): the name exists
    expect(readiness({ starting: undefined, catalog: { synced: true, source: 'api' }, dns: { name: NAME, result: { rcode: 0, answers: 0 } } }).ok).toBe(true)
  })

  it('serves from the disk snapshot: ready; never synced and nothing on disk: not ready', () => {
    const dns = { name: NAME, result: { rcode: 0, answers: 1 } }
    expect(readiness({ starting: undefined, catalog: { synced: false, source: 'disk' }, dns })).toEqual({ ok: true, reasons: [] })
    expect(readiness({ starting: undefined, catalog: { synced: false, source: 'empty' }, dns })).toEqual({ ok: false, reasons: [NOT_SYNCED] })
  })

  it('lists every reason while starting', () => {
    expect(readiness({ starting: 'catalog', catalog: { synced: false, source: 'empty' }, dns: { name: NAME, result: 'not-listening' } })).toEqual({
      ok: false, reasons: ['starting: catalog', NOT_SYNCED, 'dns: not listening yet']
    })
  })

  it('DNS: NXDOMAIN with a catalog, SERVFAIL, a timeout are not ready; NXDOMAIN without a catalog (standalone) is', () => {
    const cat = { synced: true, source: 'api' as const }
    expect(readiness({ starting: undefined, catalog: cat, dns: { name: NAME, result: { rcode: 3, answers: 0 } } }).reasons).toEqual([`dns: ${NAME}: NXDOMAIN (the catalog has not reached DNS yet)`])
    expect(readiness({ starting: undefined, catalog: cat, dns: { name: NAME, result: { rcode: 2, answers: 0 } } }).reasons).toEqual([`dns: ${NAME}: SERVFAIL`])
    expect(readiness({ starting: undefined, catalog: cat, dns: { name: NAME, result: { error: 'no answer within 1000 ms' } } }).reasons).toEqual([`dns: ${NAME}: no answer within 1000 ms`])
    expect(readiness({ starting: undefined, dns: { name: NAME, result: { rcode: 3, answers: 0 } } })).toEqual({ ok: true, reasons: [] })
    expect(readiness({ starting: undefined, dns: { name: NAME, result: { rcode: 5, answers: 0 } } }).reasons).toEqual([`dns: ${NAME}: REFUSED`])
  })

  it('DNS off and no catalog: ready once started', () => {
    expect(readiness({ starting: undefined })).toEqual({ ok: true, reasons: [] })
    expect(readiness({ starting: 'tunnel' })).toEqual({ ok: false, reasons: ['starting: tunnel'] })
  })
})

describe('liveness', () => {
  it('needs start-up finished and the control socket answering; nothing about the network', () => {
    expect(liveness({ starting: 'catalog' })).toEqual({ ok: false, reasons: ['starting: catalog'] })
    expect(liveness({ starting: undefined, controlSocket: { ok: true } })).toEqual({ ok: true, reasons: [] })
    expect(liveness({ starting: undefined, controlSocket: { ok: false, error: 'ECONNREFUSED' } })).toEqual({ ok: false, reasons: ['control socket: ECONNREFUSED'] })
  })
})
