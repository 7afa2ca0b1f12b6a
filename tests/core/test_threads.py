"""lib.core.threads.at_most: fewer intra-op threads inside the block, the old count restored after (errors too)."""

import pytest
import torch

from lib.analysis import compressors
from lib.core import threads


@pytest.fixture
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def test_at_most_lowers_and_restores(two_threads):
    with threads.at_most(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with threads.at_most(4):  # never raises the count
        assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="boom"):
        with threads.at_most(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1"])
def test_at_most_refuses_a_bad_count(bad):
    with pytest.raises(ValueError, match="n=.*integer >= 1"):
        with threads.at_most(bad):
            pass


@pytest.mark.parametrize("method", ["infovae", "sae"])
def test_a_one_thread_compressor_fit_is_the_same_fit(two_threads, method):
    """The minibatch loop on one thread (the default) gives the weights and history of the all-threads loop, and
    leaves the caller's thread count as it was."""
    acts = torch.randn(2048, 32, generator=torch.Generator().manual_seed(0))
    cfg = compressors.CompressorConfig(method=method, d_latent=4, d_hidden=16, batch_size=64, steps=30)
    a, ha = compressors.fit(acts, cfg)
    assert torch.get_num_threads() == 2
    b, hb = compressors.fit(acts, cfg, max_threads=None)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert ha.drop(columns="seconds").equals(hb.drop(columns="seconds"))
