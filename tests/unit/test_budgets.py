"""The decode budgets (worker/limits.py): per job, per worker across jobs, and wall-clock time."""

from __future__ import annotations

import time

import pytest

from worker.errors import ErrorCode, WorkerError
from worker.limits import Deadline, PixelBudget, check_job_pixels


def code_of(call) -> ErrorCode:
    with pytest.raises(WorkerError) as caught:
        call()
    return caught.value.code


def test_a_job_over_its_pixel_budget_is_image_too_large():
    check_job_pixels(1000, 1000)
    assert code_of(lambda: check_job_pixels(1001, 1000)) is ErrorCode.IMAGE_TOO_LARGE


def test_the_worker_budget_is_shared_by_jobs_in_flight_and_released_after():
    budget = PixelBudget(100)
    with budget.reserve(60):
        assert budget.state()["pixels_in_flight"] == 60

        def second():
            with budget.reserve(50):
                pass

        assert code_of(second) is ErrorCode.RATE_LIMITED  # transient: the other job will finish
        with budget.reserve(40):
            pass
    assert budget.in_use == 0
    with pytest.raises(ValueError), budget.reserve(100):
        raise ValueError("a failing job still releases its pixels")
    assert budget.in_use == 0


def test_the_decode_deadline_stops_between_images_only_when_some_are_left():
    deadline = Deadline(1)
    time.sleep(0.01)
    deadline.check(3, 3)  # the last image is done: nothing is saved by refusing now
    assert code_of(lambda: deadline.check(1, 3)) is ErrorCode.IMAGE_TOO_LARGE
    Deadline(60_000).check(1, 3)


@pytest.mark.parametrize("kind", ["admission", "pixels"])
def test_a_job_over_a_cap_waits_for_room_then_is_refused(kind):
    """Issue 24 item 6: on RunPod a taken job that is refused is FAILED, so it waits (bounded)."""
    import threading

    from worker.limits import Admission

    if kind == "admission":
        waiting, quick = Admission(1, 10, wait_s=5), Admission(1, 10, wait_s=0.2)
        hold, enter = (lambda cap: cap.admit(1)), (lambda cap: cap.admit(1))
    else:
        waiting, quick = PixelBudget(100, wait_s=5), PixelBudget(100, wait_s=0.2)
        hold, enter = (lambda cap: cap.reserve(100)), (lambda cap: cap.reserve(1))
    with hold(quick):
        start = time.monotonic()
        assert code_of(lambda: enter(quick).__enter__()) is ErrorCode.RATE_LIMITED
        assert 0.15 < time.monotonic() - start < 2
    holder = hold(waiting)
    holder.__enter__()
    threading.Timer(0.3, holder.__exit__, (None, None, None)).start()  # the other job ends
    start = time.monotonic()
    with enter(waiting):
        assert 0.25 < time.monotonic() - start < 4, "admitted once the room was given back"
