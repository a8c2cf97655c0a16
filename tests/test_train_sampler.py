"""The training loader's sampler (``sampler`` setting): one stream of shuffled passes for the
whole run (``stream``, the default) or torch's one pass per iterator (``epoch``)."""

from __future__ import annotations

import pytest

from metalung_monai.errors import InputError
from metalung_monai.training import SettingError, check_setting, train_sampler


def test_stream_is_whole_shuffled_passes_then_a_cut_one_seeded():
    data = list(range(7))
    order = list(train_sampler(data, "stream", 30, seed=3))
    assert len(order) == 30
    for k in range(4):  # four whole passes: each a permutation of the dataset
        block = order[7 * k : 7 * k + 7]
        assert sorted(block) == data
    assert len(set(order[28:])) == 2  # the last pass, cut short, repeats nothing
    assert len({tuple(order[7 * k : 7 * k + 7]) for k in range(4)}) > 1  # passes reshuffled
    assert order == list(train_sampler(data, "stream", 30, seed=3))  # seeded
    assert order != list(train_sampler(data, "stream", 30, seed=4))


def test_epoch_gives_no_sampler_and_bad_values_are_refused():
    assert train_sampler([1, 2], "epoch", 10, seed=0) is None
    with pytest.raises(InputError, match="sampler.*'stream' or 'epoch'.*'random'"):
        train_sampler([1, 2], "random", 10, seed=0)
    with pytest.raises(InputError, match="no training samples"):
        train_sampler([], "stream", 10, seed=0)
    check_setting("sampler", "epoch")
    with pytest.raises(SettingError, match="sampler.*expected one of 'stream', 'epoch'"):
        check_setting("sampler", "shuffle")
