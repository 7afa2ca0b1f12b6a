"""lib.core.threads.at_most: fewer intra-op threads inside the block, the old count restored after (errors too)."""

import dataclasses

import numpy as np
import pytest
import torch

from helpers import fp32_tol
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
    """The minibatch loop on one thread (the default) gives the weights and history of the all-threads loop up to
    float32 rounding, and leaves the caller's thread count as it was.

    Not bitwise: MKL's AVX2 sgemm splits a product differently on 1 and 2 threads (MKL_ENABLE_INSTRUCTIONS=AVX2 on
    an AVX-512 machine gave 2 ulp after 30 steps, 1.2e-7 on weights of 0.6), so the comparison uses fp32_tol
    (tests/helpers.py); a fit one step short, the smallest real change to the loop, must fall outside it."""
    acts = torch.randn(2048, 32, generator=torch.Generator().manual_seed(0))
    cfg = compressors.CompressorConfig(method=method, d_latent=4, d_hidden=16, batch_size=64, steps=30)
    a, ha = compressors.fit(acts, cfg)
    assert torch.get_num_threads() == 2
    b, hb = compressors.fit(acts, cfg, max_threads=None)
    short, _ = compressors.fit(acts, dataclasses.replace(cfg, steps=cfg.steps - 1), max_threads=None)
    sa, sb, ss = a.state_dict(), b.state_dict(), short.state_dict()
    assert sa.keys() == sb.keys() == ss.keys()
    for k in sa:
        assert (sa[k] - sb[k]).abs().max() <= fp32_tol(sb[k]), k
    assert max(float((sa[k] - ss[k]).abs().max() - fp32_tol(sb[k])) for k in sa) > 0  # the tolerance can see a step
    ha, hb = ha.drop(columns="seconds"), hb.drop(columns="seconds")
    assert list(ha.columns) == list(hb.columns) and ha.step.equals(hb.step)
    for c in ha.columns.drop("step"):
        np.testing.assert_allclose(ha[c], hb[c], rtol=0, atol=fp32_tol(hb[c].to_numpy()), err_msg=c)
