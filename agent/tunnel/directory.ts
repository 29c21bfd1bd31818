// Who is in the mesh: node name -> peer id (+ optional direct TCP addresses). The tunnel only
// talks to peers listed here. The static-file directory is the standalone fallback; the
// Kubernetes-backed registry implements the same small interface.
import { readFile, stat } from 'node:fs/promises'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import { ConfigError, firstLine, formatZodError } from '../../shared/config.ts'
import { parsePeerId } from '../../shared/peer-id.ts'

export interface PeerRecord {
  nodeName: string
  peerId: string
  /** multiaddrs where the peer accepts direct TCP, set by the operator (peers file): always dialled */
  addresses: string[]
  /**
   * multiaddrs the peer published about itself (its Lease): its LAN addresses, dialled only
   * when the candidate filter (candidates.ts) finds them on our LAN
   */
  advertised?: string[]
  /** the peer id of the relay the peer is homed on (its record; relay-set.ts): where to reach it relayed */
  homeRelay?: string
}

export interface PeerDirectory {
  byName (nodeName: string): PeerRecord | undefined
  byPeerId (peerId: string): PeerRecord | undefined
  list (): PeerRecord[]
}

const PeersFile = z.object({
  peers: z.array(z.object({
    name: z.string().min(1),
    peerId: z.string().min(40),
    addresses: z.array(z.string()).default([])
  }).strict())
}).strict()

export class StaticPeerDirectory implements PeerDirectory {
  private byNameMap = new Map<string, PeerRecord>()
  private byIdMap = new Map<string, PeerRecord>()
  private readonly file: string | undefined
  private mtimeMs = 0
  private timer: NodeJS.Timeout | undefined

  constructor (records: PeerRecord[] = [], file?: string) {
    this.file = file
    this.replace(records)
  }

  static async fromFile (file: string): Promise<StaticPeerDirectory> {
    const dir = new StaticPeerDirectory([], file)
    await dir.reload()
    return dir
  }

  static parse (text: string, source: string): PeerRecord[] {
    let raw: unknown
    try { raw = parseYaml(text) } catch (err: any) { throw new ConfigError(`${source} is not valid YAML: ${firstLine(err.message)}`) }
    const parsed = PeersFile.safeParse(raw)
    if (!parsed.success) throw new ConfigError(formatZodError(parsed.error, source))
    return parsed.data.peers.map((p, i) => {
      try { parsePeerId(p.peerId, `${source}: peers[${i}].peerId`) } catch (err: any) { throw new ConfigError(err.message) }
      return { nodeName: p.name, peerId: p.peerId, addresses: p.addresses }
    })
  }

  private replace (records: PeerRecord[]): void {
    this.byNameMap = new Map(records.map((r) => [r.nodeName, r]))
    this.byIdMap = new Map(records.map((r) => [r.peerId, r]))
  }

  /** Re-reads the file if it changed; a broken file keeps the last good directory. */
  async reload (): Promise<boolean> {
    if (this.file == null) return false
    let st
    try { st = await stat(this.file) } catch (err: any) { throw new ConfigError(`peersFile: cannot read ${this.file}: ${err.message}`) }
    if (st.mtimeMs === this.mtimeMs) return false
    this.replace(StaticPeerDirectory.parse(await readFile(this.file, 'utf8'), this.file))
    this.mtimeMs = st.mtimeMs
    return true
  }

  /** Polls the file so peers can be added without restarting the agent. */
  watch (intervalMs: number, onError: (err: unknown) => void): void {
    this.timer = setInterval(() => { this.reload().catch(onError) }, intervalMs)
    this.timer.unref()
  }

  stop (): void { clearInterval(this.timer) }

  byName (nodeName: string): PeerRecord | undefined { return this.byNameMap.get(nodeName) }
  byPeerId (peerId: string): PeerRecord | undefined { return this.byIdMap.get(peerId) }
  list (): PeerRecord[] { return [...this.byNameMap.values()] }
}
