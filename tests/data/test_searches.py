"""The one definition of a search and a session (upper_fast.searches)."""

from __future__ import annotations

import numpy as np
import pytest

from upper_fast.searches import SEARCH_GAP_S, chain_ids, search_ids, searcher_codes


def test_searchers_are_users_or_countries():
    codes, signed_in = searcher_codes(["u1", None, "u1", None, None], ["US", "US", "DE", "DE", "US"])
    assert codes[0] == codes[2]  # the user, whatever country the event says
    assert codes[1] == codes[4] != codes[3]  # signed out: one searcher per country
    assert codes[0] != codes[1]
    assert signed_in.tolist() == [True, False, True, False, False]


def test_search_chains_break_on_gap_query_and_searcher():
    s = np.array([0, 0, 0, 0, 1, 0])
    q = np.array([5, 5, 5, 6, 5, 5])
    t = np.array([100, 100 + SEARCH_GAP_S, 100 + 2 * SEARCH_GAP_S + 1, 150, 120, 110])
    ids, starts = search_ids(s, q, t)
    assert ids[0] == ids[1] == ids[5]  # gaps <= SEARCH_GAP_S chain, in time order whatever the row order
    assert len({ids[0], ids[2], ids[3], ids[4]}) == 4
    assert starts.tolist() == [100, 100, t[2], 150, 120, 100]


def test_session_ignores_query_and_rejects_bad_input():
    ids, _ = chain_ids([np.array([0, 0, 0])], np.array([0, 10, 5000]), gap_s=60)
    assert ids[0] == ids[1] != ids[2]
    with pytest.raises(ValueError, match="gap_s"):
        chain_ids([np.array([0])], np.array([0]), gap_s=-1)
    with pytest.raises(ValueError, match="one value per timestamp"):
        chain_ids([np.array([0, 1])], np.array([0]))
    assert chain_ids([np.zeros(0, np.int64)], np.zeros(0, np.int64))[0].shape == (0,)
