// The edgemesh image for tests: built from manifests/Dockerfile by test/image/build.sh (buildah,
// a locally assembled node:24-slim base), cached under ~/.cache/edgemesh/image, handed over as a
// docker-archive tarball that `ctr -n k8s.io images import` loads into a node's containerd.
import { spawn } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { mkdir, readFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const IMAGE_CACHE = join(process.env.EDGEMESH_CACHE ?? join(homedir(), '.cache', 'edgemesh'), 'image')
/** build.sh's output (buildah's steps) of the last ensureImage() call */
export const BUILD_LOG = join(IMAGE_CACHE, 'build.log')

export interface BuiltImage {
  /** docker-archive tarball (ctr images import, docker load) */
  archive: string
  /** ghcr.io/edgemesh-ts/edgemesh:<Chart appVersion>, the name inside the archive */
  ref: string
  /** uncompressed layers */
  sizeBytes: number
  archiveBytes: number
  /** how long the build took (the earlier build's time when cached) */
  buildMs: number
  cached: boolean
}

let pending: Promise<BuiltImage> | undefined

/** Builds the image unless the cached archive matches the sources; one build per process. */
export async function ensureImage (): Promise<BuiltImage> {
  pending ??= runBuild().catch((err: unknown) => { pending = undefined; throw err })
  return await pending
}

async function runBuild (): Promise<BuiltImage> {
  await mkdir(IMAGE_CACHE, { recursive: true })
  const log = createWriteStream(BUILD_LOG)
  const { code, stdout } = await new Promise<{ code: number | null, stdout: string }>((resolve, reject) => {
    const child = spawn('bash', [join(REPO_ROOT, 'test', 'image', 'build.sh')], {
      cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CI: process.env.CI ?? 'true' }
    })
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (c: string) => { out += c })
    child.stderr.pipe(log)
    child.on('error', reject)
    child.on('close', c => { resolve({ code: c, stdout: out }) })
  })
  await new Promise(resolve => log.end(resolve))
  const line = stdout.trim().split('\n').pop() ?? ''
  if (code !== 0 || !line.startsWith('{')) {
    const tail = (await readFile(BUILD_LOG, 'utf8')).split('\n').slice(-25).join('\n')
    throw new Error(`test/image/build.sh exited ${code} (full log ${BUILD_LOG}):\n${tail}`)
  }
  return JSON.parse(line) as BuiltImage
}
