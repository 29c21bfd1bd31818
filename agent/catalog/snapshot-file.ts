// The catalog's last good snapshot on disk: written to a temporary file, fsynced and renamed
// over the old one (then the directory is fsynced), so a crash or power loss leaves either the
// previous or the new snapshot, never a torn one.
import { mkdir, open, readFile, rename, rm, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { EndpointSliceInfo, PeerInfo, ServiceInfo } from './model.ts'
import type { CatalogSnapshot } from './store.ts'

const FORMAT = 1

export interface SavedCatalog {
  format: number
  savedAt: number
  services: ServiceInfo[]
  endpointSlices: EndpointSliceInfo[]
  peers: PeerInfo[]
}

// Files from older agents carry "nodes" (the catalog watched Nodes then): read and ignored. New
// files still write an empty list, so an agent rolled back to such a version can read them.

export function serializeSnapshot (snap: CatalogSnapshot, now = Date.now()): string {
  const slices: EndpointSliceInfo[] = []
  for (const bySlice of snap.endpoints.values()) for (const s of bySlice.values()) slices.push(s)
  return JSON.stringify({ format: FORMAT, savedAt: now, services: [...snap.services.values()], endpointSlices: slices, nodes: [], peers: [...snap.peers.values()] })
}

export function parseSavedCatalog (text: string, source: string): SavedCatalog {
  let raw: any
  try { raw = JSON.parse(text) } catch (err: any) { throw new Error(`${source}: not JSON (${err.message as string})`) }
  if (raw?.format !== FORMAT) throw new Error(`${source}: unknown snapshot format ${String(raw?.format)} (expected ${FORMAT})`)
  for (const k of ['services', 'endpointSlices', 'peers'] as const) {
    if (!Array.isArray(raw[k])) throw new Error(`${source}: ${k} is not a list`)
  }
  const named = (x: any): boolean => typeof x?.name === 'string' && typeof x?.resourceVersion === 'string'
  if (![...raw.services, ...raw.endpointSlices].every(named) || !raw.peers.every((p: any) => typeof p?.nodeName === 'string' && typeof p?.peerId === 'string')) {
    throw new Error(`${source}: entries are malformed`)
  }
  // peers saved by older agents: renewTime (their heartbeat) is when the record was last written
  const peers: PeerInfo[] = raw.peers.map((p: any) => {
    const { renewTime, leaseDurationSeconds, ...rest } = p
    return { ...rest, writtenAt: typeof p.writtenAt === 'number' ? p.writtenAt : typeof renewTime === 'number' ? renewTime : 0 }
  })
  return { format: FORMAT, savedAt: raw.savedAt, services: raw.services, endpointSlices: raw.endpointSlices, peers }
}

/** undefined when the file does not exist; throws when it exists but is unusable. */
export async function readSnapshotFile (file: string): Promise<SavedCatalog | undefined> {
  let text: string
  try { text = await readFile(file, 'utf8') } catch (err: any) {
    if (err.code === 'ENOENT') return undefined
    throw err
  }
  return parseSavedCatalog(text, file)
}

/** items per write: small enough that serialising one batch never blocks the loop for long */
const BATCH = 500

/**
 * Same bytes as serializeSnapshot, written in batches with a yield to the event loop between
 * them: one JSON.stringify of a 10k-Service catalog (12 MB) blocked the agent for ~86 ms.
 */
async function writeChunked (fh: FileHandle, snap: CatalogSnapshot, now: number): Promise<void> {
  const slices: EndpointSliceInfo[] = []
  for (const bySlice of snap.endpoints.values()) for (const s of bySlice.values()) slices.push(s)
  const lists: Array<[string, unknown[]]> = [['services', [...snap.services.values()]], ['endpointSlices', slices], ['nodes', []], ['peers', [...snap.peers.values()]]]
  let out = `{"format":${FORMAT},"savedAt":${now}`
  for (const [name, items] of lists) {
    out += `,"${name}":[`
    for (let i = 0; i < items.length; i += BATCH) {
      out += items.slice(i, i + BATCH).map((x) => JSON.stringify(x)).join(',')
      if (i + BATCH < items.length) out += ','
      await fh.write(out)
      out = ''
      await new Promise<void>((resolve) => { setImmediate(resolve) })
    }
    out += ']'
  }
  await fh.write(out + '}')
}

export async function writeSnapshotFile (file: string, snap: CatalogSnapshot, now = Date.now()): Promise<void> {
  const dir = dirname(file)
  await mkdir(dir, { recursive: true })
  const tmp = `${file}.tmp-${process.pid}`
  const fh = await open(tmp, 'w', 0o600)
  try {
    await writeChunked(fh, snap, now)
    await fh.sync()
  } catch (err) {
    await fh.close()
    await rm(tmp, { force: true })
    throw err
  }
  await fh.close()
  await rename(tmp, file)
  const dh = await open(dir, 'r')
  try { await dh.sync() } finally { await dh.close() }
}
