"""Early stopping in the one training loop (exported from 03_train_adapter.ipynb; issues 31.5, 24.12):
the best validation loss with a documented tie rule, and a patience that grows on a small split."""

from __future__ import annotations

import pytest

from exported.train_adapter import PATIENCE_REFERENCE_IMAGES, improves, scaled_patience


def history(epoch, loss, accuracy):
    return {"best_epoch": epoch, "best_val_loss": loss, "best_val_accuracy": accuracy}


def test_the_first_epoch_is_the_best_so_far():
    assert improves({"val_loss": 9.0, "val_accuracy": 0.0}, {"best_epoch": None, "best_val_accuracy": None})


@pytest.mark.parametrize(
    "row, better",
    [
        ({"val_loss": 0.40, "val_accuracy": 0.90}, True),  # a lower loss at a tied accuracy: the later
        ({"val_loss": 0.60, "val_accuracy": 0.95}, False),  # the loss decides before the accuracy
        ({"val_loss": 0.50, "val_accuracy": 0.95}, True),  # an equal loss: the higher accuracy
        ({"val_loss": 0.50, "val_accuracy": 0.85}, False),
        ({"val_loss": 0.50, "val_accuracy": 0.90}, True),  # both equal: the later epoch
    ],
)
def test_the_tie_rule(row, better):
    assert improves(row, history(1, 0.50, 0.90)) is better


def test_patience_grows_on_a_small_validation_split_and_zero_stays_off():
    assert scaled_patience(5, PATIENCE_REFERENCE_IMAGES) == 5 and scaled_patience(5, 5000) == 5
    assert scaled_patience(5, 36) == 12  # the 36-image split of the report: 5 epochs was too few
    assert scaled_patience(0, 10) == 0
    assert [scaled_patience(3, n) for n in (10, 50, 100, 200)] == sorted(
        [scaled_patience(3, n) for n in (10, 50, 100, 200)], reverse=True
    )
