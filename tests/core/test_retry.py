"""retry.py: what the error a call finally fails with says about whether the vendor may have acted."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import pytest

from reconciler.clock import SystemClock
from reconciler.providers.base import ErrorKind, VendorError
from reconciler.retry import RetryPolicy, call_with_retry

LOST = VendorError(ErrorKind.RETRYABLE, "", "timed out", api="StartRecord")  # the vendor may have acted
THROTTLED = VendorError(ErrorKind.THROTTLED, "HTTP 429", "too many requests", api="StartRecord")
REFUSED = VendorError(ErrorKind.TERMINAL, "1001", "bad request", api="StartRecord")


def failing(*errors: VendorError) -> Callable[[], Awaitable[None]]:
    """A call that raises `errors` in turn, the last one for ever."""
    tries = iter(errors)

    async def call() -> None:
        raise next(tries, errors[-1])

    return call


async def retry(call: Callable[[], Awaitable[None]]) -> VendorError:
    with pytest.raises(VendorError) as caught:
        await call_with_retry(call, clock=SystemClock(), policy=RetryPolicy(base=0.0), rng=random.Random(1))
    return caught.value


@pytest.mark.parametrize("last", [THROTTLED, REFUSED], ids=["throttled-out", "refused"])
async def test_a_call_whose_answer_was_lost_once_fails_unanswered_whatever_the_last_answer(last: VendorError) -> None:
    """A start timed out (ZEGO may have started the recording), then throttled past the limit: the final error
    said 'answered', so the executor dropped the ClientTaskId that finds that recording (and an update was not
    marked unconfirmed). One lost answer makes the outcome unknown, whatever a later answer says."""
    final = await retry(failing(LOST, last))
    assert final.kind is last.kind and final.unanswered


async def test_a_call_answered_every_time_fails_answered() -> None:
    assert not (await retry(failing(THROTTLED))).unanswered
    assert not (await retry(failing(REFUSED))).unanswered


@pytest.mark.parametrize("raw", ["0", "101", "three", "²", ""])
def test_max_attempts_out_of_range_or_not_a_number_is_refused_naming_the_variable(raw: str) -> None:
    """Review 9b: "²" passed str.isdigit(), and int() refused it in Python's words."""
    with pytest.raises(ValueError, match=rf"^CAPCTL_MAX_ATTEMPTS={raw!r}: expected a whole number from 1 to 100$"):
        RetryPolicy.from_env({"CAPCTL_MAX_ATTEMPTS": raw})
    assert RetryPolicy.from_env({"CAPCTL_MAX_ATTEMPTS": "7"}).max_attempts == 7


def test_max_attempts_of_thousands_of_digits_is_refused_naming_the_variable() -> None:
    """5,000 digits: int() refused them in Python's words ("use sys.set_int_max_str_digits()")."""
    with pytest.raises(ValueError, match=r"^CAPCTL_MAX_ATTEMPTS='9{40}'… \(5000 characters\): expected a whole"):
        RetryPolicy.from_env({"CAPCTL_MAX_ATTEMPTS": "9" * 5000})


UNSENT = VendorError(ErrorKind.RETRYABLE, "", "cannot connect (connection refused)", api="StartRecord", unsent=True)


@pytest.mark.parametrize(
    ("tries", "acted"),
    [
        ((UNSENT,), False),  # every try refused at the port: no byte reached the vendor
        ((UNSENT, REFUSED), False),
        ((LOST, UNSENT), True),  # a lost answer before: that try may have acted (walk 46A-1)
        ((UNSENT, LOST), True),
        ((LOST, UNSENT, THROTTLED), True),
    ],
    ids=["unsent", "unsent-then-refused", "lost-then-unsent", "unsent-then-lost", "lost-unsent-throttled"],
)
async def test_a_call_refused_at_the_port_every_time_cannot_have_acted(
    tries: tuple[VendorError, ...], acted: bool
) -> None:
    """Walk 51A-1: a connect refused counted as a lost answer, so a start refused at the port at every try read
    `may run at the vendor` everywhere (state list, plan, apply's ✗ line, the page). Still unanswered (a
    provider that never answers is given up on), but it cannot have acted."""
    final = await retry(failing(*tries))
    assert final.unanswered is (tries[-1].kind is ErrorKind.RETRYABLE or acted)
    assert final.may_have_acted is acted
