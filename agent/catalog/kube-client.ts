// A small Kubernetes API client: kubeconfig or in-cluster credentials, JSON requests, paginated
// LIST and streaming WATCH over one keep-alive HTTPS agent. Why not @kubernetes/client-node in
// the agent: importing its KubeConfig alone adds ~72 MB RSS and its Watch ~33 MB (measured,
// Node 24), more than the agent's whole catalog at 10k Services; the agent needs four verbs.
import { readFile } from 'node:fs/promises'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http'
import { parse as parseYaml } from 'yaml'
import { ConfigError } from '../../shared/errors.ts'

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount'
/** projected tokens rotate (kubelet refreshes at 80% of their life): re-read this often */
const TOKEN_REREAD_MS = 60_000
/**
 * A watch that asked for bookmarks and delivers nothing (not even a bookmark) for this long is
 * presumed dead. The apiserver sends bookmarks to quiet watches about once a minute (measured
 * on kube-apiserver 1.36, 5 minutes: a filtered Lease watch at 61, 121, 182, 242, 302 s while
 * other Leases changed; an unfiltered quiet Service watch first at ~121 s, then every ~60 s), so
 * this stays above two intervals; a false alarm costs only a cheap re-watch. A watch without bookmarks may rightly be silent until its server-side timeout: it is
 * presumed dead only WATCH_END_MARGIN_MS after that (or when another watch of the same client is:
 * they share the path to the apiserver).
 */
export const WATCH_IDLE_MS = 150_000
/** how long after its timeoutSeconds a watch without bookmarks may still end on its own */
export const WATCH_END_MARGIN_MS = 30_000
/**
 * TCP keep-alive on watch connections after this much silence. A quiet watch without bookmarks
 * sends nothing for minutes, and NATs on the way from an edge site drop idle TCP mappings (AWS
 * NAT gateway: 350 s, below our 300-600 s watch timeouts): the watch would then hear nothing,
 * not even its end, until timeoutSeconds + WATCH_END_MARGIN_MS. A probe keeps the mapping.
 */
export const WATCH_KEEPALIVE_MS = 30_000

export interface KubeCredentials {
  server: string
  ca?: string | Buffer
  cert?: string | Buffer
  key?: string | Buffer
  token?: string
  tokenFile?: string
  insecureSkipTlsVerify?: boolean
  /** see WATCH_IDLE_MS */
  watchIdleMs?: number
  /** see WATCH_END_MARGIN_MS (tests) */
  watchEndMarginMs?: number
}

export class KubeApiError extends Error {
  readonly status: number
  readonly reason: string
  constructor (status: number, reason: string, message: string) {
    super(message)
    this.name = 'KubeApiError'
    this.status = status
    this.reason = reason
  }
}

/** Inline `<field>-data` (base64) or the file `<field>` names (relative to the kubeconfig); a file that cannot be read is a ConfigError naming both. */
async function fileOrData (obj: Record<string, unknown>, field: string, kubeconfig: string): Promise<Buffer | undefined> {
  const data = obj[`${field}-data`]
  const file = obj[field]
  if (typeof data === 'string' && data !== '') return Buffer.from(data, 'base64')
  if (typeof file !== 'string' || file === '') return undefined
  const base = kubeconfig.slice(0, kubeconfig.lastIndexOf('/') + 1) || './'
  const path = file.startsWith('/') ? file : `${base}${file}`
  try {
    return await readFile(path)
  } catch (err: any) {
    throw new ConfigError(`kubernetes.kubeconfig: ${kubeconfig}: cannot read ${field} ${path}: ${err.message}`)
  }
}

/** Credentials from a kubeconfig file (current context), or in-cluster when file is undefined. */
export async function loadKubeCredentials (file: string | undefined, serverOverride?: string): Promise<KubeCredentials> {
  const creds = await loadCredentials(file, serverOverride)
  if (serverOverride != null) creds.server = serverOverride.replace(/\/$/, '')
  return creds
}

async function loadCredentials (file: string | undefined, serverOverride: string | undefined): Promise<KubeCredentials> {
  if (file == null) {
    const host = process.env.KUBERNETES_SERVICE_HOST
    const port = process.env.KUBERNETES_SERVICE_PORT ?? '443'
    if ((host == null || host === '') && serverOverride == null) throw new ConfigError('kubernetes.kubeconfig: not set and not running in a pod (KUBERNETES_SERVICE_HOST is empty); set kubernetes.kubeconfig or kubernetes.apiServer')
    const server = host == null || host === '' ? '' : host.includes(':') ? `https://[${host}]:${port}` : `https://${host}:${port}`
    let ca: Buffer
    try { ca = await readFile(`${SA_DIR}/ca.crt`) } catch (err: any) { throw new ConfigError(`kubernetes.kubeconfig: not set, and the in-cluster CA cannot be read: ${err.message}`) }
    return { server, ca, tokenFile: `${SA_DIR}/token` }
  }
  let doc: any
  let text: string
  try { text = await readFile(file, 'utf8') } catch (err: any) { throw new ConfigError(`kubernetes.kubeconfig: cannot read ${file}: ${err.message}`) }
  // YAML's messages carry a code frame over several lines: the first says what and where
  try { doc = parseYaml(text) } catch (err: any) { throw new ConfigError(`kubernetes.kubeconfig: ${file} is not valid YAML: ${String(err.message).split('\n', 1)[0]!.trim().replace(/:$/, '')}`) }
  if (typeof doc !== 'object' || doc == null || Array.isArray(doc)) throw new ConfigError(`kubernetes.kubeconfig: ${file} is not a kubeconfig (expected a YAML mapping with clusters, users and contexts)`)
  const named = (list: unknown, name: unknown, what: string): any => {
    const hit = Array.isArray(list) ? list.find((x: any) => x?.name === name) : undefined
    if (hit == null) throw new ConfigError(`kubernetes.kubeconfig: ${file} has no ${what} "${String(name)}"`)
    return hit
  }
  const ctx = named(doc?.contexts, doc?.['current-context'], 'context')?.context
  const cluster = named(doc?.clusters, ctx?.cluster, 'cluster')?.cluster
  const user = named(doc?.users, ctx?.user, 'user')?.user ?? {}
  if (typeof cluster?.server !== 'string') throw new ConfigError(`kubernetes.kubeconfig: ${file}: cluster has no server`)
  const creds: KubeCredentials = { server: cluster.server.replace(/\/$/, '') }
  const ca = await fileOrData(cluster, 'certificate-authority', file)
  const cert = await fileOrData(user, 'client-certificate', file)
  const key = await fileOrData(user, 'client-key', file)
  if (ca != null) creds.ca = ca
  if (cert != null) creds.cert = cert
  if (key != null) creds.key = key
  if (typeof user.token === 'string') creds.token = user.token
  if (typeof user.tokenFile === 'string') creds.tokenFile = user.tokenFile
  if (cluster['insecure-skip-tls-verify'] === true) creds.insecureSkipTlsVerify = true
  if (creds.token == null && creds.tokenFile == null && creds.cert == null) {
    throw new ConfigError(`kubernetes.kubeconfig: ${file}: user needs a token, tokenFile or client certificate (exec and auth-provider plugins are not supported)`)
  }
  return creds
}

export interface ListResult<T = any> { items: T[], resourceVersion: string }
export interface WatchParams {
  resourceVersion: string
  timeoutSeconds: number
  labelSelector?: string
  /**
   * ask for bookmarks (default true): worth it only for a filtered watch, whose resume point
   * would otherwise fall behind the events it does not see and out of the watch cache
   */
  bookmarks?: boolean
  /** bytes of the response body as they arrive */
  onBytes?: (n: number) => void
}
export interface WatchEvent { type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR', object: any }

export class KubeClient {
  readonly server: string
  private readonly creds: KubeCredentials
  private readonly agent: HttpsAgent | HttpAgent
  private readonly https: boolean
  private token: string | undefined
  private tokenReadAt = 0
  /** each open watch's "presume dead" switch */
  private readonly openWatches = new Set<() => void>()

  constructor (creds: KubeCredentials) {
    this.creds = creds
    this.server = creds.server
    this.https = creds.server.startsWith('https:')
    this.token = creds.token
    this.agent = this.newAgent()
  }

  private newAgent (): HttpsAgent | HttpAgent {
    const creds = this.creds
    return this.https
      ? new HttpsAgent({
        keepAlive: true,
        maxSockets: 8,
        ...(creds.ca != null ? { ca: creds.ca } : {}),
        ...(creds.cert != null ? { cert: creds.cert } : {}),
        ...(creds.key != null ? { key: creds.key } : {}),
        rejectUnauthorized: creds.insecureSkipTlsVerify !== true
      })
      : new HttpAgent({ keepAlive: true, maxSockets: 8 })
  }

  /**
   * A connection went silent (a partition sends no RST): the idle keep-alive sockets to the
   * same apiserver are presumed dead too, and reusing one would hang the next request. Active
   * ones (other watches) are left alone: they notice on their own.
   */
  private dropConnections (): void {
    for (const sockets of Object.values(this.agent.freeSockets)) for (const s of sockets ?? []) s.destroy()
  }

  private async authHeader (): Promise<string | undefined> {
    if (this.creds.tokenFile != null && Date.now() - this.tokenReadAt > TOKEN_REREAD_MS) {
      try {
        this.token = (await readFile(this.creds.tokenFile, 'utf8')).trim()
        this.tokenReadAt = Date.now()
      } catch (err: any) {
        if (this.token == null) throw new KubeApiError(0, 'TokenUnreadable', `cannot read token file ${this.creds.tokenFile}: ${err.message}`)
      }
    }
    return this.token != null ? `Bearer ${this.token}` : undefined
  }

  private async open (method: string, path: string, body: string | undefined, contentType: string, signal: AbortSignal | undefined, timeoutMs: number): Promise<IncomingMessage> {
    const auth = await this.authHeader()
    const headers: Record<string, string> = { accept: 'application/json' }
    if (auth != null) headers.authorization = auth
    if (body != null) { headers['content-type'] = contentType; headers['content-length'] = String(Buffer.byteLength(body)) }
    const send = this.https ? httpsRequest : httpRequest
    return await new Promise((resolve, reject) => {
      const req = send(`${this.server}${path}`, { method, headers, agent: this.agent, ...(signal != null ? { signal } : {}) }, resolve)
      // timeout = no bytes for this long; watches set it above their server-side timeoutSeconds
      req.setTimeout(timeoutMs, () => {
        req.destroy(new KubeApiError(0, 'Timeout', `${method} ${path}: no response for ${timeoutMs} ms`))
        this.dropConnections()
      })
      req.on('error', (err: any) => {
        reject(err instanceof KubeApiError || err.name === 'AbortError' ? err : new KubeApiError(0, 'Unreachable', `${method} ${this.server}${path}: ${err.message}`))
      })
      req.end(body)
    })
  }

  /** Buffers joined once and decoded once: no chain of intermediate strings for the GC. */
  private static async readAll (res: IncomingMessage): Promise<string> {
    const chunks: Buffer[] = []
    for await (const chunk of res) chunks.push(chunk as Buffer)
    return Buffer.concat(chunks).toString('utf8')
  }

  private static errorFrom (status: number, text: string, what: string): KubeApiError {
    let reason = 'Unknown'
    let message = text.slice(0, 500)
    try {
      const st = JSON.parse(text)
      if (typeof st.reason === 'string') reason = st.reason
      if (typeof st.message === 'string') message = st.message
    } catch { /* not a Status */ }
    return new KubeApiError(status, reason, `${what}: ${status} ${reason}: ${message}`)
  }

  /** One JSON request; non-2xx answers throw KubeApiError carrying the apiserver's reason. */
  async request<T = any> (method: string, path: string, body?: unknown, opts: { signal?: AbortSignal, contentType?: string, timeoutMs?: number } = {}): Promise<T> {
    const res = await this.open(method, path, body === undefined ? undefined : JSON.stringify(body), opts.contentType ?? 'application/json', opts.signal, opts.timeoutMs ?? 30_000)
    const text = await KubeClient.readAll(res)
    const status = res.statusCode ?? 0
    if (status < 200 || status > 299) throw KubeClient.errorFrom(status, text, `${method} ${path}`)
    return JSON.parse(text) as T
  }

  /**
   * Paginated LIST (limit per page); returns every item and the list's resourceVersion. With
   * onPage, each page is handed over as it arrives and not kept (the caller can reduce it and
   * let the raw objects go: at 10k Services they are ~48 MB).
   */
  async list (path: string, opts: { labelSelector?: string, limit?: number, signal?: AbortSignal, onPage?: (items: any[]) => void } = {}): Promise<ListResult> {
    const items: any[] = []
    const fetchPage = async (cont: string): Promise<any> => {
      const q = new URLSearchParams({ limit: String(opts.limit ?? 500) })
      if (opts.labelSelector != null) q.set('labelSelector', opts.labelSelector)
      if (cont !== '') q.set('continue', cont)
      return await this.request<any>('GET', `${path}?${q}`, undefined, opts.signal != null ? { signal: opts.signal } : {})
    }
    let page = await fetchPage('')
    for (;;) {
      const cont: string = page.metadata?.continue ?? ''
      // ask for the next page first, then digest this one while the apiserver works on it
      const next = cont === '' ? undefined : fetchPage(cont)
      next?.catch(() => {}) // awaited below
      if (opts.onPage != null) opts.onPage(page.items ?? [])
      else for (const it of page.items ?? []) items.push(it)
      if (next == null) return { items, resourceVersion: String(page.metadata?.resourceVersion ?? '') }
      page = await next
    }
  }

  /**
   * Streams a WATCH; calls onEvent per event and resolves when the server ends the watch
   * (timeoutSeconds) or rejects on transport/HTTP errors. An ERROR event is delivered as is.
   * onOpen: the apiserver accepted the watch (200), before any event.
   */
  async watch (path: string, params: WatchParams, onEvent: (ev: WatchEvent) => void, signal?: AbortSignal, onOpen?: () => void): Promise<void> {
    const bookmarks = params.bookmarks ?? true
    const q = new URLSearchParams({ watch: '1', resourceVersion: params.resourceVersion, timeoutSeconds: String(params.timeoutSeconds) })
    if (bookmarks) q.set('allowWatchBookmarks', 'true')
    if (params.labelSelector != null) q.set('labelSelector', params.labelSelector)
    const configuredIdleMs = this.creds.watchIdleMs ?? WATCH_IDLE_MS
    const idleMs = bookmarks ? configuredIdleMs : Math.max(configuredIdleMs, params.timeoutSeconds * 1000 + (this.creds.watchEndMarginMs ?? WATCH_END_MARGIN_MS))
    // a watch whose headers take longer than the idle window is as dead as a silent stream
    // (a re-watch started inside a partition would otherwise hang for the full 30 s)
    const res = await this.open('GET', `${path}?${q}`, undefined, '', signal, Math.min(30_000, configuredIdleMs))
    const status = res.statusCode ?? 0
    if (status !== 200) throw KubeClient.errorFrom(status, await KubeClient.readAll(res), `WATCH ${path}`)
    onOpen?.()
    res.setEncoding('utf8')
    res.socket.setTimeout(0) // the request timeout covered connect + headers; the stream has its own
    res.socket.setKeepAlive(true, WATCH_KEEPALIVE_MS)
    let partial = ''
    let idle = false
    const presumeDead = (): void => { idle = true; res.destroy() }
    const idleTimer = setTimeout(() => {
      presumeDead()
      this.dropConnections()
      // the others share the path that just went silent: they resume too instead of waiting
      // out their own (for watches without bookmarks, much longer) idle windows
      for (const other of this.openWatches) if (other !== presumeDead) other()
    }, idleMs)
    this.openWatches.add(presumeDead)
    try {
      for await (const chunk of res) {
        idleTimer.refresh()
        params.onBytes?.(Buffer.byteLength(chunk as string))
        const text = partial + (chunk as string)
        let start = 0
        for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
          const line = text.slice(start, nl)
          start = nl + 1
          if (line.length > 0) onEvent(JSON.parse(line) as WatchEvent)
        }
        partial = text.slice(start)
      }
    } catch (err) {
      // silence for WATCH_IDLE_MS: the connection is presumed dead (a partition sends no RST);
      // the caller resumes from its last resourceVersion as after a normal end
      if (idle) return
      throw err
    } finally {
      clearTimeout(idleTimer)
      this.openWatches.delete(presumeDead)
    }
    if (idle) return
    if (partial.trim() !== '') onEvent(JSON.parse(partial) as WatchEvent)
  }

  close (): void { this.agent.destroy() }
}
