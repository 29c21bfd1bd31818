// An immutable string-keyed map with cheap copy-on-write: entries live in hash shards, and a
// new version copies only the shards it touches (plus the shard table). Publishing a catalog
// snapshot after one update then costs ~1/SHARDS of a whole-map copy: at 10k Services that
// was 2.6 ms and 0.46 MB of garbage per update with a plain Map (measured by bench:catalog).

const SHARDS = 256

function shardOf (key: string): number {
  // FNV-1a over UTF-16 code units: fast and well spread for "namespace/name" keys
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return (h >>> 0) & (SHARDS - 1)
}

const EMPTY_SHARD: ReadonlyMap<string, any> = new Map()

export class CowMap<V> implements ReadonlyMap<string, V> {
  private readonly shards: ReadonlyArray<ReadonlyMap<string, V>>
  readonly size: number

  private constructor (shards: ReadonlyArray<ReadonlyMap<string, V>>, size: number) {
    this.shards = shards
    this.size = size
  }

  static empty<V> (): CowMap<V> { return new CowMap<V>(new Array(SHARDS).fill(EMPTY_SHARD), 0) }

  static from<V> (entries: Iterable<[string, V]>): CowMap<V> {
    const d = CowMap.empty<V>().edit()
    for (const [k, v] of entries) d.set(k, v)
    return d.freeze()
  }

  get (key: string): V | undefined { return this.shards[shardOf(key)]!.get(key) }
  has (key: string): boolean { return this.shards[shardOf(key)]!.has(key) }

  * entries (): MapIterator<[string, V]> { for (const s of this.shards) yield * s.entries() }
  * keys (): MapIterator<string> { for (const s of this.shards) yield * s.keys() }
  * values (): MapIterator<V> { for (const s of this.shards) yield * s.values() }
  [Symbol.iterator] (): MapIterator<[string, V]> { return this.entries() }

  forEach (fn: (value: V, key: string, map: ReadonlyMap<string, V>) => void): void {
    for (const [k, v] of this.entries()) fn(v, k, this)
  }

  /** A mutable draft; freeze() returns the new version and leaves this one untouched. */
  edit (): CowMapDraft<V> { return new CowMapDraft(this.shards, this.size) }

  /** @internal */
  static build<V> (shards: ReadonlyArray<ReadonlyMap<string, V>>, size: number): CowMap<V> { return new CowMap(shards, size) }
}

export class CowMapDraft<V> {
  private shards: Array<ReadonlyMap<string, V>>
  private readonly owned = new Set<number>()
  private count: number

  constructor (shards: ReadonlyArray<ReadonlyMap<string, V>>, size: number) {
    this.shards = [...shards]
    this.count = size
  }

  private writable (i: number): Map<string, V> {
    if (!this.owned.has(i)) {
      this.shards[i] = new Map(this.shards[i])
      this.owned.add(i)
    }
    return this.shards[i] as Map<string, V>
  }

  get size (): number { return this.count }
  get (key: string): V | undefined { return this.shards[shardOf(key)]!.get(key) }
  has (key: string): boolean { return this.shards[shardOf(key)]!.has(key) }
  keys (): IterableIterator<string> { return (function * (shards) { for (const s of shards) yield * s.keys() })(this.shards) }

  set (key: string, value: V): this {
    const m = this.writable(shardOf(key))
    if (!m.has(key)) this.count++
    m.set(key, value)
    return this
  }

  delete (key: string): boolean {
    const i = shardOf(key)
    if (!this.shards[i]!.has(key)) return false
    this.writable(i).delete(key)
    this.count--
    return true
  }

  freeze (): CowMap<V> {
    const frozen = CowMap.build(this.shards, this.count)
    // the draft must not mutate shards the frozen version now shares
    this.shards = [...this.shards]
    this.owned.clear()
    return frozen
  }
}
