/**
 * Typed errors of the core. Frontends map them at the edge: `{"Err": "..."}` for Docker,
 * HTTP status codes for the admin API, exit codes for the CLI (later: gRPC codes for CSI).
 * Every message is a sentence a user can act on: what failed, for which volume, and why.
 */
export type ErrorCode = 'NotFound' | 'Conflict' | 'InvalidArgument' | 'Unavailable' | 'Busy' | 'Internal';

export class BallastError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = code + 'Error';
  }
}

export class NotFoundError extends BallastError {
  constructor(message: string, options?: { cause?: unknown }) { super('NotFound', message, options); }
}
export class ConflictError extends BallastError {
  constructor(message: string, options?: { cause?: unknown }) { super('Conflict', message, options); }
}
export class InvalidArgumentError extends BallastError {
  constructor(message: string, options?: { cause?: unknown }) { super('InvalidArgument', message, options); }
}
export class UnavailableError extends BallastError {
  constructor(message: string, options?: { cause?: unknown }) { super('Unavailable', message, options); }
}
export class BusyError extends BallastError {
  constructor(message: string, options?: { cause?: unknown }) { super('Busy', message, options); }
}
export class InternalError extends BallastError {
  constructor(message: string, options?: { cause?: unknown }) { super('Internal', message, options); }
}

/** Wraps anything thrown into a BallastError, keeping typed errors as they are. */
export function asBallastError(err: unknown, context?: string): BallastError {
  if (err instanceof BallastError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new InternalError(context ? `${context}: ${msg}` : msg, { cause: err });
}

const HTTP_STATUS: Record<ErrorCode, number> = {
  NotFound: 404, Conflict: 409, InvalidArgument: 400, Unavailable: 503, Busy: 409, Internal: 500,
};
export function httpStatusOf(code: ErrorCode): number { return HTTP_STATUS[code]; }
