// The names of everything the proxy creates in netfilter: its chains (all `<prefix>-*`) and the
// `recent` lists of ClientIP affinity, and the validation of the prefix they share. iptables
// names are at most 28 characters, so the prefix is bounded by the longest suffix.
import { hash } from 'node:crypto'

/** iptables chain names are at most 28 characters (XT_EXTENSION_MAXNAMELEN - 1); recent list names are kept within it too. */
export const MAX_CHAIN_LEN = 28
const AFFINITY_KIND = '-A'
const MIN_HASH_LEN = 8
const POSTROUTING_SUFFIX = '-POSTROUTING'
/** The mark bit of connections to masquerade (hairpin); kube-proxy's is 0x4000. */
export const HAIRPIN_MARK = '0x200000'

/**
 * Validates the prefix (at most 16 characters, so `<prefix>-POSTROUTING` fits); returns the
 * length of the hashes in recent list names.
 */
export function checkPrefix (prefix: string): number {
  if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(prefix)) throw new Error(`invalid chain prefix ${JSON.stringify(prefix)}`)
  const max = Math.min(MAX_CHAIN_LEN - AFFINITY_KIND.length - MIN_HASH_LEN, MAX_CHAIN_LEN - POSTROUTING_SUFFIX.length)
  if (prefix.length > max) throw new Error(`chain prefix ${prefix} is too long (max ${max} characters)`)
  return Math.min(16, MAX_CHAIN_LEN - prefix.length - AFFINITY_KIND.length)
}

/** nat: the chain hooked from PREROUTING and OUTPUT, one rule per non-empty bucket. */
export function servicesChain (prefix: string): string { return `${prefix}-SERVICES` }

/** nat: the chain hooked from POSTROUTING: the hairpin masquerade. */
export function postroutingChain (prefix: string): string { return `${prefix}${POSTROUTING_SUFFIX}` }

/** nat: the chain of bucket `bucket` (0-255): prefix-B<3-digit bucket>. */
export function bucketChainName (prefix: string, bucket: number): string {
  return `${prefix}-B${String(bucket).padStart(3, '0')}`
}

/** filter: the chain hooked from INPUT, FORWARD and OUTPUT that refuses service ports without endpoints. */
export function rejectChain (prefix: string): string { return `${prefix}-REJECT` }

const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'
/** The first `len` (≤ 16) RFC 4648 base32 characters of sha256(s), like kube-proxy's chain hashes. */
function hash32 (s: string, len: number): string {
  const d = hash('sha256', s, 'buffer')
  let out = ''
  // 10 bytes = 16 base32 characters, as two 40-bit groups
  for (let g = 0; g < 2 && out.length < len; g++) {
    const o = g * 5
    const hi = d[o]!
    const lo = ((d[o + 1]! << 24) | (d[o + 2]! << 16) | (d[o + 3]! << 8) | d[o + 4]!) >>> 0
    const v = hi * 2 ** 32 + lo // 40 bits, exact in a double
    for (let k = 7; k >= 0 && out.length < len; k--) out += B32[Math.floor(v / 2 ** (5 * k)) % 32]
  }
  return out
}

// the same few thousand names are asked for on every sync: memoized, bounded (deterministic, so
// the functions stay pure as seen from outside)
const AFFINITY_MEMO_MAX = 50_000
const affinityNames = new Map<string, string>()

/** The recent list of a service port's target: prefix-A<hash of key, port, protocol, target>. */
export function affinityListName (prefix: string, key: string, port: number, protocol: string, target: string): string {
  return affinityName(prefix, checkPrefix(prefix), key, port, protocol, target)
}

/** `affinityListName` with the prefix already checked (`hashLen` from `checkPrefix`). */
export function affinityName (prefix: string, hashLen: number, key: string, port: number, protocol: string, target: string): string {
  const input = `${key}:${port}/${protocol}->${target}`
  const memoKey = `${prefix}\0${input}`
  let name = affinityNames.get(memoKey)
  if (name == null) {
    name = `${prefix}${AFFINITY_KIND}${hash32(input, hashLen)}`
    if (affinityNames.size >= AFFINITY_MEMO_MAX) affinityNames.clear()
    affinityNames.set(memoKey, name)
  }
  return name
}
