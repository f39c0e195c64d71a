import pino, { type Logger } from 'pino';

/**
 * The daemon's logger: one JSON line per event on stdout, written synchronously (sonic-boom with
 * `sync: true`, one write(2) per line on the calling thread). pino's default destination writes
 * through the libuv thread pool instead: each line then costs a hand-off to a pool thread and a
 * second event-loop wake-up when it is done, which was a measurable part of a Mount that needs no
 * kernel mount, and a line still in memory is lost when the process is killed. Written synchronously,
 * a line is in the file (or the pipe) before the answer it describes goes out, and a crash loses
 * none. The price: a log reader that stops reading (a full pipe) holds the daemon up, as it does
 * Go daemons (dockerd, containerd) that write their logs the same way.
 */
export function daemonLogger(level: string): Logger {
  return pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 1, sync: true }));
}
