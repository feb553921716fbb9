"""Small helpers shared by the e2e tests."""

import time


def wait_until(fn, timeout=30, interval=0.1, what="condition"):
    """Call fn() until it returns a truthy value, and return that value.

    Raises AssertionError mentioning `what` (and the last exception fn raised,
    if any) when `timeout` seconds pass first; `what` may be a function, called
    then (to describe the state at the timeout). fn is called at least once."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = fn()
            last_exc = None
            if v:
                return v
        except AssertionError as e:
            last_exc = e
        except Exception as e:  # keep polling; report it on timeout
            last_exc = e
        if time.monotonic() >= deadline:
            if callable(what):
                try:
                    what = what()
                except Exception as e:
                    what = "(could not describe the state: %r)" % (e,)
            msg = "timed out after %ss waiting for %s" % (timeout, what)
            if last_exc is not None:
                msg += " (last error: %r)" % (last_exc,)
            raise AssertionError(msg)
        time.sleep(interval)
