"""Position ids of left-padded generation batches: counted from each row's first real token."""

import torch

from dep_lightning.models.generation import left_padded_positions


def test_positions_start_at_each_rows_first_real_token():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert left_padded_positions(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]]


def test_a_row_gets_the_positions_it_would_have_alone():
    alone = torch.ones((1, 4), dtype=torch.long)
    padded = torch.cat([torch.zeros((1, 3), dtype=torch.long), alone], dim=1)
    assert torch.equal(left_padded_positions(padded)[:, 3:], left_padded_positions(alone))
    assert left_padded_positions(padded.bool()).dtype == torch.long
