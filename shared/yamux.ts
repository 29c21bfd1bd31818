// The one yamux configuration of the mesh (agents and the relay). yamux grants its peer more
// window as soon as data is *received* (YamuxStream.handleData -> sendWindowUpdate), not when the
// consumer reads it; only a paused stream stops granting. So after pause() the peer may still
// send the whole window it was granted, and all of it lands in the stream's read buffer. With
// the library defaults the window grows (auto-tuning doubles it per RTT) up to 16 MiB while the
// read buffer aborts the stream past 4 MiB: a slow reader got its stream reset with
// StreamBufferError. Here the window can never exceed the read buffer: a paused stream buffers
// at most one window, and the limit keeps the same margin again for whatever was buffered when
// it paused.
import { yamux } from '@chainsafe/libp2p-yamux'

/** The largest receive window one stream grants (auto-tuning grows towards it from 256 KiB). */
export const MAX_STREAM_WINDOW_BYTES = 4 * 1024 * 1024
/** What a stream may hold unread before libp2p aborts it: two full windows. */
export const MAX_READ_BUFFER_BYTES = 2 * MAX_STREAM_WINDOW_BYTES

/**
 * Streams the peer may open before our side of a new connection has finished its upgrade. The
 * library's 10 aborts the muxer (but not the connection: a zombie whose new streams all fail)
 * when a dial that many requests waited on opens, and each sends its stream at once.
 */
export const MAX_EARLY_STREAMS = 1_024

export const meshYamuxOptions = {
  maxEarlyStreams: MAX_EARLY_STREAMS,
  streamOptions: { maxStreamWindowSize: MAX_STREAM_WINDOW_BYTES, maxReadBufferLength: MAX_READ_BUFFER_BYTES }
}

/** yamux for createLibp2p's streamMuxers. */
export function meshYamux (): ReturnType<typeof yamux> {
  return yamux(meshYamuxOptions)
}
