// The test cluster's sandbox ("pause") image, built here because the lab cannot pull
// registry.k8s.io/pause: pause.c compiled with gcc -static, packed as a one-layer OCI image
// archive that `ctr images import` loads. Cached under ~/.cache/edgemesh/images by a hash of
// its inputs, so only the first run compiles.
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const execFileP = promisify(execFile)
const PAUSE_SOURCE = fileURLToPath(new URL('./pause.c', import.meta.url))
export const IMAGE_CACHE = join(process.env.EDGEMESH_CACHE ?? join(homedir(), '.cache/edgemesh'), 'images')
/** Bump when the archive layout below changes (part of the cache key). */
const FORMAT = 'oci-archive-1'

export interface LocalImage { archive: string, ref: string }

function sha256 (data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex')
}

async function run (cmd: string, args: string[], cwd?: string): Promise<void> {
  try {
    await execFileP(cmd, args, { cwd, maxBuffer: 16 << 20 })
  } catch (err: any) {
    throw new Error(`test image: ${cmd} ${args.join(' ')} failed: ${err.stderr ?? err.message}`)
  }
}

/**
 * Writes an OCI image archive (oci-layout, index.json, blobs/) with one uncompressed layer made
 * of rootDir, named ref (the io.containerd.image.name annotation `ctr images import` reads).
 */
export async function writeOciArchive (rootDir: string, entrypoint: string[], ref: string, out: string): Promise<void> {
  const work = await mkdtemp(`${out}.work-`)
  try {
    const blobs = join(work, 'blobs/sha256')
    await mkdir(blobs, { recursive: true })
    // Reproducible layer: sorted, owned by root, epoch mtimes.
    await run('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-cf', join(work, 'layer.tar'), '-C', rootDir, '.'])
    const layer = await readFile(join(work, 'layer.tar'))
    await rm(join(work, 'layer.tar'))
    const layerDigest = sha256(layer)
    await writeFile(join(blobs, layerDigest), layer)
    const config = Buffer.from(JSON.stringify({
      architecture: process.arch === 'arm64' ? 'arm64' : 'amd64',
      os: 'linux',
      config: { Entrypoint: entrypoint, WorkingDir: '/' },
      rootfs: { type: 'layers', diff_ids: [`sha256:${layerDigest}`] },
      history: [{ created_by: 'edgemesh test/cluster/image.ts' }]
    }))
    await writeFile(join(blobs, sha256(config)), config)
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${sha256(config)}`, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${layerDigest}`, size: layer.length }]
    }))
    await writeFile(join(blobs, sha256(manifest)), manifest)
    const tag = ref.slice(ref.lastIndexOf(':') + 1)
    await writeFile(join(work, 'index.json'), JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        digest: `sha256:${sha256(manifest)}`,
        size: manifest.length,
        annotations: { 'io.containerd.image.name': ref, 'org.opencontainers.image.ref.name': tag }
      }]
    }))
    await writeFile(join(work, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
    // a temporary name of this process's own: two runs building the same archive at once must
    // not write into one file (the same bytes either way, so either rename may win)
    const tmp = `${out}.tmp-${process.pid}`
    await run('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-cf', tmp, '-C', work, 'oci-layout', 'index.json', 'blobs'])
    await rename(tmp, out)
  } finally {
    await rm(work, { recursive: true, force: true })
  }
}

let pending: Promise<LocalImage> | undefined

/**
 * The pause image (also the smoke test's workload: `/pause echo WORDS --` prints and waits).
 * ref is localhost/edgemesh-test/pause:<hash of the inputs>.
 */
export async function pauseImage (): Promise<LocalImage> {
  pending ??= (async () => {
    const source = await readFile(PAUSE_SOURCE)
    const key = sha256(Buffer.concat([source, Buffer.from(`${FORMAT} ${process.arch}`)])).slice(0, 16)
    const ref = `localhost/edgemesh-test/pause:${key}`
    const archive = join(IMAGE_CACHE, `pause-${key}.tar`)
    if (existsSync(archive)) return { archive, ref }
    await mkdir(IMAGE_CACHE, { recursive: true })
    const root = await mkdtemp(join(IMAGE_CACHE, 'pause-root-'))
    try {
      await run('gcc', ['-static', '-Os', '-s', '-o', join(root, 'pause'), PAUSE_SOURCE])
      await writeOciArchive(root, ['/pause'], ref, archive)
    } finally {
      await rm(root, { recursive: true, force: true })
    }
    return { archive, ref }
  })()
  const p = pending
  p.catch(() => { pending = undefined })
  return await p
}
