import type { FastifyInstance } from 'fastify';
import { BallastError, InvalidArgumentError, httpStatusOf } from '../core/errors.js';

export const BODY_LIMIT = 1024 * 1024;

/**
 * dockerd sends JSON bodies without a Content-Type, so every body is parsed as JSON whatever its
 * header says. An empty body is `{}`. A body that is not a JSON object is an InvalidArgument.
 */
export function acceptJsonAnyContentType(app: FastifyInstance): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string', bodyLimit: BODY_LIMIT }, (_req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') { done(null, {}); return; }
    let parsed: unknown;
    try { parsed = JSON.parse(text); } catch (e) {
      done(new InvalidArgumentError(`request body is not valid JSON: ${(e as Error).message.slice(0, 200)}`), undefined);
      return;
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      done(new InvalidArgumentError('request body must be a JSON object'), undefined);
      return;
    }
    done(null, parsed);
  });
}

/** HTTP status and a sentence for anything thrown in a handler, including Fastify's own errors. */
export function describeError(err: unknown): { status: number; message: string } {
  if (err instanceof BallastError) return { status: httpStatusOf(err.code), message: err.message };
  const e = err as { statusCode?: number; code?: string; message?: string };
  if (e?.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return { status: 413, message: `request body is larger than ${BODY_LIMIT} bytes` };
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return { status: e.statusCode, message: `bad request: ${e.message ?? 'unknown error'}` };
  }
  return { status: 500, message: `internal error: ${e?.message ?? String(err)}` };
}

/** Reads a string field of a request body; missing or wrong type is an InvalidArgument. */
export function field(body: unknown, key: string): unknown {
  return (body as Record<string, unknown> | undefined)?.[key];
}
