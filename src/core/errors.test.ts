import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AbortedError, AlreadyExistsError, BusyError, DeadlineExceededError, FailedPreconditionError, InvalidArgumentError,
  NotFoundError, ResourceExhaustedError, UnavailableError, asBallastError, httpStatusOf,
} from './errors.js';

test('every error kind has its code, HTTP status and retryable default; retryable can be overridden', () => {
  const cases = [
    [new NotFoundError('x'), 'NotFound', 404, false],
    [new InvalidArgumentError('x'), 'InvalidArgument', 400, false],
    [new BusyError('x'), 'Busy', 409, true],
    [new UnavailableError('x'), 'Unavailable', 503, true],
    [new FailedPreconditionError('x'), 'FailedPrecondition', 412, false],
    [new AbortedError('x'), 'Aborted', 409, true],
    [new ResourceExhaustedError('x'), 'ResourceExhausted', 507, false],
    [new AlreadyExistsError('x'), 'AlreadyExists', 409, false],
    [new DeadlineExceededError('x'), 'DeadlineExceeded', 504, true],
  ] as const;
  for (const [e, code, status, retryable] of cases) {
    assert.equal(e.code, code);
    assert.equal(httpStatusOf(e.code), status, code);
    assert.equal(e.retryable, retryable, code);
    assert.equal(e.name, `${code}Error`);
    assert.ok(e instanceof Error);
  }
  assert.equal(new UnavailableError('gone for good', { retryable: false }).retryable, false);
  const cause = new Error('inner');
  assert.equal(new ResourceExhaustedError('full', { cause }).cause, cause);
});

test('asBallastError keeps typed errors and wraps anything else as Internal with its context', () => {
  const typed = new AbortedError('busy volume');
  assert.equal(asBallastError(typed), typed);
  const w = asBallastError(new Error('boom'), 'mount v1');
  assert.equal(w.code, 'Internal');
  assert.equal(w.message, 'mount v1: boom');
  assert.equal(asBallastError('text').message, 'text');
});
