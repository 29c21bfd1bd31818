// StopStack (shared/stop-stack.ts): parts stop in reverse order of start, a failing stop does
// not keep the others from stopping, unwinding happens once, and start errors name the part.
import { describe, expect, it } from 'vitest'
import { StopStack, labelled } from '../../shared/stop-stack.ts'
import { ConfigError } from '../../shared/errors.ts'

describe('StopStack', () => {
  it('unwinds in reverse order, once, past a stop that fails', async () => {
    const order: string[] = []
    const failures: Array<[string, string]> = []
    const stack = new StopStack((name, err) => failures.push([name, (err as Error).message]))
    stack.push('a', () => { order.push('a') })
    await stack.start('b', async () => 'B', async (v) => { order.push(v) })
    stack.push('c', () => { throw new Error('c broke') })
    stack.push('d', async () => { order.push('d') })
    await Promise.all([stack.unwind(), stack.unwind()])
    await stack.unwind()
    expect(order).toEqual(['d', 'B', 'a'])
    expect(failures).toEqual([['c', 'c broke']])
    expect(() => { stack.push('late', () => {}) }).toThrow('late: registered after the stop began')
  })

  it('a step that fails is rethrown naming the part, and registers nothing', async () => {
    const stack = new StopStack(() => {})
    const stopped: string[] = []
    const err = await stack.start('metrics', async () => { throw Object.assign(new Error('listen EADDRINUSE: address already in use 127.0.0.1:9100'), { code: 'EADDRINUSE' }) }, () => { stopped.push('metrics') }).catch((e: unknown) => e as Error)
    expect(err.message).toBe('metrics: listen EADDRINUSE: address already in use 127.0.0.1:9100')
    expect((err.cause as { code: string }).code).toBe('EADDRINUSE')
    await stack.unwind()
    expect(stopped).toEqual([])
  })

  it('labelled: config errors and messages that already name the part pass through', () => {
    const config = new ConfigError('pskFile: bad')
    expect(labelled('tunnel', config)).toBe(config)
    const named = new Error('dns: cannot listen on udp 169.254.96.16:53: EADDRINUSE')
    expect(labelled('dns', named)).toBe(named)
    expect((labelled('proxy', 'a string') as Error).message).toBe('proxy: a string')
  })
})
