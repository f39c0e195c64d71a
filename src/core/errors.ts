/**
 * Typed errors of the core. Frontends map them at the edge: `{"Err": "..."}` for Docker,
 * HTTP status codes for the admin API, exit codes for the CLI (and gRPC codes for CSI).
 * Every message is a sentence a user can act on: what failed, for which volume, and why.
 *
 * The kinds follow gRPC's codes where the frontends need the difference (moby errdefs does the same):
 * - FailedPrecondition: the system is not in the state the call needs (attached elsewhere, frozen);
 *   retrying without a change will fail again.
 * - Aborted: a concurrent operation on the same volume won; retry.
 * - ResourceExhausted: no space (host filesystem, overcommit, quota).
 * - AlreadyExists: the name is taken by something incompatible (CSI's ALREADY_EXISTS).
 * - DeadlineExceeded: a server or a client did not answer within its bound.
 * `retryable` says whether the same call may succeed later without anything changed by the user.
 */
export type ErrorCode =
  | 'NotFound' | 'Conflict' | 'InvalidArgument' | 'Unavailable' | 'Busy' | 'Internal'
  | 'FailedPrecondition' | 'Aborted' | 'ResourceExhausted' | 'AlreadyExists' | 'DeadlineExceeded';

const RETRYABLE: Readonly<Record<ErrorCode, boolean>> = {
  NotFound: false, Conflict: false, InvalidArgument: false, Unavailable: true, Busy: true, Internal: false,
  FailedPrecondition: false, Aborted: true, ResourceExhausted: false, AlreadyExists: false, DeadlineExceeded: true,
};

export interface ErrorOptions { cause?: unknown; retryable?: boolean }

export class BallastError extends Error {
  readonly code: ErrorCode;
  /** May the same call succeed later without a change by the user (a server back, a lock released)? */
  readonly retryable: boolean;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options?.retryable ?? RETRYABLE[code];
    this.name = code + 'Error';
  }
}

export class NotFoundError extends BallastError {
  constructor(message: string, options?: ErrorOptions) { super('NotFound', message, options); }
}
export class ConflictError extends BallastError {
  constructor(message: string, options?: ErrorOptions) { super('Conflict', message, options); }
}
export class InvalidArgumentError extends BallastError {
  constructor(message: string, options?: ErrorOptions) { super('InvalidArgument', message, options); }
}
export class UnavailableError extends BallastError {
  constructor(message: string, options?: ErrorOptions) { super('Unavailable', message, options); }
}
export class BusyError extends BallastError {
  constructor(message: string, options?: ErrorOptions) { super('Busy', message, options); }
}
export class InternalError extends BallastError {
  constructor(message: string, options?: ErrorOptions) { super('Internal', message, options); }
}

/** Wraps anything thrown into a BallastError, keeping typed errors as they are. */
export class FailedPreconditionError extends BallastError {
  constructor(message: string, options?: ErrorOptions) { super('FailedPrecondition', message, options); }
}
export class AbortedError extends BallastError {
  constructor(message: string, options?: ErrorOptions) { super('Aborted', message, options); }
}
export class ResourceExhaustedError extends BallastError {
  constructor(message: string, options?: ErrorOptions) { super('ResourceExhausted', message, options); }
}
export class AlreadyExistsError extends BallastError {
  constructor(message: string, options?: ErrorOptions) { super('AlreadyExists', message, options); }
}
export class DeadlineExceededError extends BallastError {
  constructor(message: string, options?: ErrorOptions) { super('DeadlineExceeded', message, options); }
}

export function asBallastError(err: unknown, context?: string): BallastError {
  if (err instanceof BallastError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new InternalError(context ? `${context}: ${msg}` : msg, { cause: err });
}

const HTTP_STATUS: Record<ErrorCode, number> = {
  NotFound: 404, Conflict: 409, InvalidArgument: 400, Unavailable: 503, Busy: 409, Internal: 500,
  FailedPrecondition: 412, Aborted: 409, ResourceExhausted: 507, AlreadyExists: 409, DeadlineExceeded: 504,
};
export function httpStatusOf(code: ErrorCode): number { return HTTP_STATUS[code]; }
