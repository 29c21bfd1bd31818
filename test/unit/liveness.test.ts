// Unit tests for dead-path detection (agent/tunnel/liveness.ts): the pure step and the monitor
// driven by an injected clock and interval.
import { describe, expect, it } from 'vitest'
import { LivenessMonitor, livenessStep, type LivenessSettings, type LivenessTimers } from '../../agent/tunnel/liveness.ts'

const S: LivenessSettings = { tickMs: 500, probeAfterMs: 1_000, deadAfterMs: 3_000 }

describe('livenessStep', () => {
  it('resets silence when anything arrived, probes after probeAfterMs, declares dead after deadAfterMs', () => {
    let st = { received: 5, silentMs: 0 }
    const actions: string[] = []
    for (let i = 0; i < 6; i++) {
      const r = livenessStep(st, 5, 500, S)
      st = r.state
      actions.push(r.action)
    }
    expect(actions).toEqual(['none', 'probe', 'probe', 'probe', 'probe', 'dead'])
    expect(st.silentMs).toBe(3_000)
    expect(livenessStep({ received: 5, silentMs: 2_500 }, 6, 500, S)).toEqual({ state: { received: 6, silentMs: 0 }, action: 'none' })
  })

  it('a late tick (our own loop stalled) is no evidence against the peer, nor for it', () => {
    expect(livenessStep({ received: 1, silentMs: 2_500 }, 1, 1_001, S)).toEqual({ state: { received: 1, silentMs: 2_500 }, action: 'none' })
    expect(livenessStep({ received: 1, silentMs: 2_500 }, 1, 1_000, S).action).toBe('dead')
  })
})

class FakeTimers implements LivenessTimers {
  t = 0
  fns = new Map<number, { fn: () => void, ms: number, next: number }>()
  private id = 0
  now = (): number => this.t
  setInterval = (fn: () => void, ms: number): unknown => { this.fns.set(++this.id, { fn, ms, next: this.t + ms }); return this.id }
  clearInterval = (h: unknown): void => { this.fns.delete(h as number) }
  /** Advances the clock, firing intervals on time. */
  advance (ms: number): void {
    const end = this.t + ms
    for (;;) {
      const due = [...this.fns.values()].filter((f) => f.next <= end).sort((a, b) => a.next - b.next)[0]
      if (due == null) break
      this.t = due.next
      due.next += due.ms
      due.fn()
    }
    this.t = end
  }

  /** Jumps the clock without firing anything (an event-loop stall), then fires what is due once. */
  stall (ms: number): void {
    this.t += ms
    for (const f of [...this.fns.values()]) { f.next = this.t + f.ms; f.fn() }
  }
}

function target (): { received: number, probes: number, deadAt: number | null, silent: number | null, t: { received: () => number, probe: () => void, dead: (ms: number) => void } } {
  const o = {
    received: 0,
    probes: 0,
    deadAt: null as number | null,
    silent: null as number | null,
    t: { received: () => o.received, probe: () => { o.probes++ }, dead: (ms: number) => { o.silent = ms } }
  }
  return o
}

describe('LivenessMonitor', () => {
  it('a silent connection is probed, then declared dead once, within deadAfterMs + one tick; a chatty one never', () => {
    const timers = new FakeTimers()
    const mon = new LivenessMonitor(S, timers)
    const dead = target()
    const alive = target()
    mon.watch(dead.t)
    mon.watch(alive.t)
    for (let i = 0; i < 10; i++) { alive.received++; timers.advance(500) }
    expect(alive.silent).toBeNull()
    expect(alive.probes).toBe(0)
    expect(dead.silent).toBe(3_000)
    expect(dead.probes).toBe(4)
    expect(mon.size).toBe(1)
  })

  it('an answer to a probe keeps the connection alive', () => {
    const timers = new FakeTimers()
    const mon = new LivenessMonitor(S, timers)
    const c = target()
    c.t.probe = () => { c.probes++; c.received++ } // the peer answers every ping
    mon.watch(c.t)
    timers.advance(30_000)
    expect(c.silent).toBeNull()
    expect(c.probes).toBeGreaterThan(10)
  })

  it('our own stall does not kill a connection (silence counts on-time ticks only); the timer stops when nothing is watched', () => {
    const timers = new FakeTimers()
    const mon = new LivenessMonitor(S, timers)
    const c = target()
    const unwatch = mon.watch(c.t)
    timers.advance(2_000)
    timers.stall(5_000)
    expect(c.silent).toBeNull()
    timers.advance(500)
    expect(c.silent).toBeNull()
    timers.advance(500)
    expect(c.silent).toBe(3_000)
    const d = target()
    const un2 = mon.watch(d.t)
    expect(timers.fns.size).toBe(1)
    un2()
    unwatch()
    expect(timers.fns.size).toBe(0)
    mon.stop()
  })

  it('an excused silence (the relay is down too) is not declared dead until the excuse ends', () => {
    const timers = new FakeTimers()
    const mon = new LivenessMonitor(S, timers)
    const c = target()
    let relayDown = true
    mon.watch({ ...c.t, excused: () => relayDown })
    timers.advance(10_000)
    expect(c.silent).toBeNull()
    expect(c.probes).toBeGreaterThan(10)
    relayDown = false
    timers.advance(500)
    expect(c.silent).toBe(10_500)
  })
})
