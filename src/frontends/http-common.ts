import type { IncomingMessage, ServerResponse } from 'node:http';
import { BallastError, InvalidArgumentError, httpStatusOf } from '../core/errors.js';

export const BODY_LIMIT = 1024 * 1024;

/** A request body over BODY_LIMIT: answered 413. */
export class BodyTooLargeError extends Error {
  readonly statusCode = 413;
  constructor() { super(`request body is larger than ${BODY_LIMIT} bytes`); }
}

/**
 * Reads a request body as JSON whatever its Content-Type says (dockerd sends none). An empty body is
 * `{}`; a body that is not a JSON object is an InvalidArgument; more than BODY_LIMIT bytes is a 413.
 */
export function readJsonBody(req: IncomingMessage): Promise<unknown> {
  const declared = Number(req.headers['content-length']);
  if (declared > BODY_LIMIT) { req.resume(); return Promise.reject(new BodyTooLargeError()); }
  return new Promise((resolve, reject) => {
    let first: Buffer | undefined;
    let more: Buffer[] | undefined;
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > BODY_LIMIT) { first = undefined; more = undefined; reject(new BodyTooLargeError()); return; }
      if (first === undefined) first = c; else (more ??= [first]).push(c);
    });
    req.on('error', reject);
    req.on('end', () => {
      if (size > BODY_LIMIT) return;
      try { resolve(parseJsonObject(more ? Buffer.concat(more).toString('utf8') : first ? first.toString('utf8') : '')); } catch (e) { reject(e); }
    });
  });
}

function parseJsonObject(text: string): unknown {
  if (text.length === 0 || text.trim() === '') return {};
  let parsed: unknown;
  try { parsed = JSON.parse(text); } catch (e) {
    throw new InvalidArgumentError(`request body is not valid JSON: ${(e as Error).message.slice(0, 200)}`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new InvalidArgumentError('request body must be a JSON object');
  return parsed;
}

/** Writes a complete answer. */
export function send(res: ServerResponse, status: number, contentType: string, body: string | Buffer): void {
  if (res.headersSent) { res.end(); return; }
  res.writeHead(status, { 'content-type': contentType, 'content-length': typeof body === 'string' ? Buffer.byteLength(body) : body.length });
  res.end(body);
}

/** HTTP status and a sentence for anything thrown in a handler. */
export function describeError(err: unknown): { status: number; message: string } {
  if (err instanceof BallastError) return { status: httpStatusOf(err.code), message: err.message };
  const e = err as { statusCode?: number; code?: string; message?: string };
  if (err instanceof BodyTooLargeError) return { status: 413, message: err.message };
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return { status: e.statusCode, message: `bad request: ${e.message ?? 'unknown error'}` };
  }
  return { status: 500, message: `internal error: ${e?.message ?? String(err)}` };
}

/** Reads a field of a request body (validation is the core's). */
export function field(body: unknown, key: string): unknown {
  return (body as Record<string, unknown> | undefined)?.[key];
}

/** The path of a request URL without its query string. */
export function pathOf(url: string | undefined): string {
  const u = url ?? '/';
  const q = u.indexOf('?');
  return q < 0 ? u : u.slice(0, q);
}
