// The home relay goes into the peer record only when the ranking does not already say it, and
// only once it has held: a relay that restarts or flaps writes nothing (each write is a watch
// event to every agent).
import { describe, expect, it } from 'vitest'
import { HomePublication, homeToPublish } from '../../agent/tunnel/home-publication.ts'

function fakeTimers (): { timers: { setTimeout: (fn: () => void, ms: number) => unknown, clearTimeout: (h: unknown) => void }, advance: (ms: number) => void, pending: () => number } {
  let now = 0
  let next = 1
  const queue = new Map<number, { at: number, fn: () => void }>()
  return {
    timers: {
      setTimeout: (fn, ms) => { const id = next++; queue.set(id, { at: now + ms, fn }); return id },
      clearTimeout: (h) => { queue.delete(h as number) }
    },
    advance: (ms) => {
      const end = now + ms
      for (;;) {
        const due = [...queue.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0]
        if (due == null) break
        queue.delete(due[0])
        now = due[1].at
        due[1].fn()
      }
      now = end
    },
    pending: () => queue.size
  }
}

function setup (initial: string | undefined): { pub: HomePublication, writes: Array<string | undefined>, clock: ReturnType<typeof fakeTimers> } {
  const clock = fakeTimers()
  const writes: Array<string | undefined> = []
  const pub = new HomePublication({ rankedFirst: 'R1', publish: (h) => { writes.push(h) }, settleMs: 1000, jitterMs: 500, random: () => 0.5, timers: clock.timers }, initial)
  return { pub, writes, clock }
}

describe('home relay publication', () => {
  it('never publishes the home the ranking gives', () => {
    expect(homeToPublish('R1', 'R1')).toBeUndefined()
    expect(homeToPublish(undefined, 'R1')).toBeUndefined()
    expect(homeToPublish('R2', 'R1')).toBe('R2')
    const { pub, writes, clock } = setup('R1')
    expect(pub.initial).toBeUndefined()
    pub.observe('R1')
    clock.advance(10_000)
    expect(writes).toEqual([])
    expect(clock.pending()).toBe(0)
  })

  it('publishes another home once it held for settle + jitter, and withdraws it the same way', () => {
    const { pub, writes, clock } = setup('R1')
    pub.observe('R2')
    clock.advance(1249)
    expect(writes).toEqual([])
    pub.observe('R2') // confirmed again: the wait is not restarted
    clock.advance(1)
    expect(writes).toEqual(['R2'])
    pub.observe('R1')
    clock.advance(1250)
    expect(writes).toEqual(['R2', undefined])
  })

  it('a relay that flaps (away and back within the settle time) writes nothing', () => {
    const { pub, writes, clock } = setup('R1')
    for (let i = 0; i < 20; i++) {
      pub.observe('R2')
      clock.advance(600)
      pub.observe('R1')
      clock.advance(600)
    }
    clock.advance(10_000)
    expect(writes).toEqual([])
  })

  it('a start on another home publishes it at once (the record is written at start anyway)', () => {
    const { pub, writes, clock } = setup('R3')
    expect(pub.initial).toBe('R3')
    pub.observe('R3')
    clock.advance(10_000)
    expect(writes).toEqual([])
    pub.observe('R1')
    clock.advance(1250)
    expect(writes).toEqual([undefined])
  })

  it('stop() cancels a pending write', () => {
    const { pub, writes, clock } = setup('R1')
    pub.observe('R2')
    pub.stop()
    expect(clock.pending()).toBe(0)
    clock.advance(10_000)
    pub.observe('R3')
    clock.advance(10_000)
    expect(writes).toEqual([])
  })
})
