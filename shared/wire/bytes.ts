// Bounds-checked byte reader/writer for the small binary control protocols. Every read checks
// the remaining length and throws WireError, so a decoder never reads past its input.

export class WireError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'WireError'
  }
}

export class ByteReader {
  private offset = 0
  private readonly view: DataView
  private readonly buf: Uint8Array
  constructor (buf: Uint8Array) {
    this.buf = buf
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  }

  get position (): number { return this.offset }
  get remaining (): number { return this.buf.byteLength - this.offset }

  private need (n: number, what: string): void {
    if (this.offset + n > this.buf.byteLength) throw new WireError(`truncated ${what}`)
  }

  u8 (what = 'u8'): number { this.need(1, what); return this.view.getUint8(this.offset++) }
  u16 (what = 'u16'): number { this.need(2, what); const v = this.view.getUint16(this.offset); this.offset += 2; return v }
  u32 (what = 'u32'): number { this.need(4, what); const v = this.view.getUint32(this.offset); this.offset += 4; return v }
  u64 (what = 'u64'): bigint { this.need(8, what); const v = this.view.getBigUint64(this.offset); this.offset += 8; return v }
  bytes (n: number, what = 'bytes'): Uint8Array {
    this.need(n, what)
    const v = this.buf.subarray(this.offset, this.offset + n)
    this.offset += n
    return v
  }

  /** u8 length prefix */
  shortBytes (what: string, max = 255): Uint8Array {
    const n = this.u8(`${what} length`)
    if (n > max) throw new WireError(`${what} too long (${n} > ${max})`)
    return this.bytes(n, what)
  }

  utf8 (what: string, max = 255): string {
    const b = this.shortBytes(what, max)
    const s = new TextDecoder('utf-8', { fatal: true })
    try { return s.decode(b) } catch { throw new WireError(`${what} is not valid UTF-8`) }
  }

  end (): void {
    if (this.remaining !== 0) throw new WireError(`${this.remaining} trailing bytes`)
  }
}

export class ByteWriter {
  private buf: Uint8Array
  private view: DataView
  private offset = 0
  constructor (initial = 256) {
    this.buf = new Uint8Array(initial)
    this.view = new DataView(this.buf.buffer)
  }

  private ensure (n: number): void {
    if (this.offset + n <= this.buf.byteLength) return
    const next = new Uint8Array(Math.max(this.buf.byteLength * 2, this.offset + n))
    next.set(this.buf.subarray(0, this.offset))
    this.buf = next
    this.view = new DataView(next.buffer)
  }

  u8 (v: number): this { this.ensure(1); this.view.setUint8(this.offset, v); this.offset += 1; return this }
  u16 (v: number): this { this.ensure(2); this.view.setUint16(this.offset, v); this.offset += 2; return this }
  u32 (v: number): this { this.ensure(4); this.view.setUint32(this.offset, v >>> 0); this.offset += 4; return this }
  u64 (v: bigint): this { this.ensure(8); this.view.setBigUint64(this.offset, v); this.offset += 8; return this }
  bytes (b: Uint8Array): this { this.ensure(b.byteLength); this.buf.set(b, this.offset); this.offset += b.byteLength; return this }
  shortBytes (b: Uint8Array, what: string): this {
    if (b.byteLength > 255) throw new WireError(`${what} too long to encode`)
    return this.u8(b.byteLength).bytes(b)
  }

  utf8 (s: string, what: string): this { return this.shortBytes(new TextEncoder().encode(s), what) }
  get length (): number { return this.offset }
  finish (): Uint8Array { return this.buf.slice(0, this.offset) }
}
