// Unit tests for the CLI table renderer (shared/table.ts).
import { describe, expect, it } from 'vitest'
import { renderTable } from '../../shared/table.ts'

describe('renderTable', () => {
  it('aligns columns to the widest cell, two spaces apart, with a dash rule under the header', () => {
    const out = renderTable(['NODE', 'PATH', 'RTT'], [
      ['edge-1', 'direct-udp', 12],
      ['a-much-longer-name', 'relay-tcp', 3.5]
    ])
    expect(out).toBe([
      'NODE                PATH        RTT',
      '------------------  ----------  ---',
      'edge-1              direct-udp  12',
      'a-much-longer-name  relay-tcp   3.5'
    ].join('\n'))
  })

  it('renders null and undefined as "-"', () => {
    const out = renderTable(['A', 'B', 'C'], [[null, undefined, 'x'], ['yy', null, null]])
    expect(out).toBe([
      'A   B  C',
      '--  -  -',
      '-   -  x',
      'yy  -  -'
    ].join('\n'))
  })

  it('keeps 0 and empty strings (only null/undefined become "-")', () => {
    expect(renderTable(['N', 'S'], [[0, '']])).toBe('N  S\n-  -\n0')
  })

  it('trims trailing spaces from every line', () => {
    const out = renderTable(['LONGHEADER', 'X'], [['a', '']])
    for (const line of out.split('\n')) expect(line).toBe(line.trimEnd())
    expect(out.split('\n')[2]).toBe('a')
  })

  it('only header and rule when there are no rows', () => {
    expect(renderTable(['PEER', 'STATE'], [])).toBe('PEER  STATE\n----  -----')
  })

  it('header wider than all cells sets the width', () => {
    expect(renderTable(['WIDEHEADER', 'B'], [['a', 'b']])).toBe('WIDEHEADER  B\n----------  -\na           b')
  })

  it('short rows are allowed (missing cells are omitted)', () => {
    expect(renderTable(['A', 'B'], [['xx'], ['y', 'z']])).toBe('A   B\n--  -\nxx\ny   z')
  })
})
