// IP address text <-> bytes for the DNS zone: strict parsers (the catalog tolerates any JSON, so
// an endpoint "address" may be anything), the RFC 5952 canonical IPv6 text, and reverse names.
// Pure and allocation-light; none of these throw.

/** Strict dotted quad: four decimal octets 0-255, no leading zeros, no spaces. */
export function parseIPv4 (s: string): Uint8Array | undefined {
  const n = s.length
  if (n < 7 || n > 15) return undefined
  const out = new Uint8Array(4)
  let part = 0
  let val = 0
  let digits = 0
  for (let i = 0; i <= n; i++) {
    const c = i < n ? s.charCodeAt(i) : 0x2e
    if (c === 0x2e) {
      if (digits === 0 || part > 3) return undefined
      out[part++] = val
      val = 0
      digits = 0
    } else if (c >= 0x30 && c <= 0x39) {
      if (digits > 0 && val === 0) return undefined // leading zero
      val = val * 10 + (c - 0x30)
      if (val > 255) return undefined
      digits++
    } else {
      return undefined
    }
  }
  return part === 4 ? out : undefined
}

function hexVal (c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30
  if (c >= 0x61 && c <= 0x66) return c - 0x57
  if (c >= 0x41 && c <= 0x46) return c - 0x37
  return -1
}

/** RFC 4291 text (with "::" and an embedded dotted quad); no zone ids, no brackets. */
export function parseIPv6 (s: string): Uint8Array | undefined {
  const n = s.length
  if (n < 2 || n > 45) return undefined
  const groups: number[] = []
  let gap = -1
  let i = 0
  if (s.startsWith('::')) {
    gap = 0
    i = 2
    if (n === 2) return new Uint8Array(16)
  } else if (s.charCodeAt(0) === 0x3a) {
    return undefined
  }
  for (;;) {
    // one group (or an embedded IPv4 address at the end)
    let j = i
    let v = 0
    while (j < n && j - i < 5) {
      const h = hexVal(s.charCodeAt(j))
      if (h < 0) break
      v = v * 16 + h
      j++
    }
    if (j < n && s.charCodeAt(j) === 0x2e) {
      const v4 = parseIPv4(s.slice(i))
      if (v4 == null || groups.length > 6) return undefined
      groups.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!)
      break
    }
    if (j === i || j - i > 4) return undefined
    groups.push(v)
    if (groups.length > 8) return undefined
    if (j === n) break
    if (s.charCodeAt(j) !== 0x3a) return undefined
    if (j + 1 < n && s.charCodeAt(j + 1) === 0x3a) {
      if (gap >= 0) return undefined
      gap = groups.length
      i = j + 2
      if (i === n) break
    } else {
      i = j + 1
      if (i === n) return undefined // trailing single colon
    }
  }
  if (gap < 0 ? groups.length !== 8 : groups.length > 7) return undefined
  const out = new Uint8Array(16)
  const tail = gap < 0 ? 0 : groups.length - gap
  const head = gap < 0 ? groups.length : gap
  for (let g = 0; g < head; g++) { out[2 * g] = groups[g]! >> 8; out[2 * g + 1] = groups[g]! & 0xff }
  for (let g = 0; g < tail; g++) {
    const at = 8 - tail + g
    const v = groups[head + g]!
    out[2 * at] = v >> 8
    out[2 * at + 1] = v & 0xff
  }
  return out
}

/** Parses either family: 4 bytes for IPv4, 16 for IPv6. */
export function parseIP (s: string): Uint8Array | undefined {
  return s.includes(':') ? parseIPv6(s) : parseIPv4(s)
}

export function formatIPv4 (b: Uint8Array): string {
  return `${b[0]!}.${b[1]!}.${b[2]!}.${b[3]!}`
}

/** RFC 5952: lowercase, no leading zeros, the longest run (>= 2) of zero groups as "::". */
export function formatIPv6 (b: Uint8Array): string {
  const g: number[] = []
  for (let i = 0; i < 8; i++) g.push((b[2 * i]! << 8) | b[2 * i + 1]!)
  let best = -1
  let bestLen = 1
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) { i++; continue }
    let j = i
    while (j < 8 && g[j] === 0) j++
    if (j - i > bestLen) { best = i; bestLen = j - i }
    i = j
  }
  if (best < 0) return g.map((x) => x.toString(16)).join(':')
  const left = g.slice(0, best).map((x) => x.toString(16)).join(':')
  const right = g.slice(best + bestLen).map((x) => x.toString(16)).join(':')
  return `${left}::${right}`
}

export function formatIP (b: Uint8Array): string {
  return b.length === 4 ? formatIPv4(b) : formatIPv6(b)
}

/** d.c.b.a.in-addr.arpa, or the 32 reversed nibbles under ip6.arpa. */
export function reverseName (b: Uint8Array): string {
  if (b.length === 4) return `${b[3]!}.${b[2]!}.${b[1]!}.${b[0]!}.in-addr.arpa`
  const parts: string[] = []
  for (let i = 15; i >= 0; i--) parts.push((b[i]! & 0xf).toString(16), (b[i]! >> 4).toString(16))
  return `${parts.join('.')}.ip6.arpa`
}

/** The dashed form used for pod names and unnamed headless endpoints: 10-0-0-1, fd00--1. */
export function dashedIP (b: Uint8Array): string {
  return b.length === 4 ? `${b[0]!}-${b[1]!}-${b[2]!}-${b[3]!}` : formatIPv6(b).replaceAll(':', '-')
}

/** The inverse of dashedIP, for pod names (a-b-c-d or an IPv6 address with '-' for ':'). */
export function parseDashedIP (label: string): Uint8Array | undefined {
  if (label.length === 0 || label.length > 45) return undefined
  const v4 = parseIPv4(label.replaceAll('-', '.'))
  if (v4 != null) return v4
  return label.includes('-') ? parseIPv6(label.replaceAll('-', ':')) : undefined
}
