"""Fleet routing without servers: rendezvous ranking, spill-over above the per-server cap,
down-marking, and the keys that keep a group's samples and an episode's turns together."""

from __future__ import annotations

from collections import Counter

import pytest

from agents.engines.fleet_keys import ConversationKeys, prompt_key
from agents.engines.fleet_routing import FleetRouter, NoServerAvailable, hrw_order

SERVERS = [f"http://127.0.0.1:{8000 + i}/v1" for i in range(3)]
KEYS = [f"task-{i}/prompt-{i % 7}" for i in range(3000)]


def test_ranking_is_stable_and_spreads_keys_evenly() -> None:
    first = {key: hrw_order(key, SERVERS)[0] for key in KEYS}
    assert first == {key: hrw_order(key, list(reversed(SERVERS)))[0] for key in KEYS}, "order of the list matters"
    shares = Counter(first.values())
    assert set(shares) == set(SERVERS)
    assert all(0.28 < count / len(KEYS) < 0.39 for count in shares.values()), shares


def test_a_server_leaving_moves_only_its_own_keys() -> None:
    before = {key: hrw_order(key, SERVERS)[0] for key in KEYS}
    after = {key: hrw_order(key, SERVERS[:2])[0] for key in KEYS}
    moved = [key for key in KEYS if before[key] != after[key]]
    assert moved and all(before[key] == SERVERS[2] for key in moved)
    assert all(after[key] == hrw_order(key, SERVERS)[1] for key in moved), "they go to their second choice"


def test_requests_of_one_key_stay_on_one_server_up_to_the_cap_then_spill_in_rank_order() -> None:
    router = FleetRouter(SERVERS, per_server_cap=2)
    ranked = hrw_order("group-a", SERVERS)
    taken = [router.acquire("group-a") for _ in range(6)]
    assert taken == [ranked[0]] * 2 + [ranked[1]] * 2 + [ranked[2]] * 2
    assert router.spilled == 4
    seventh = router.acquire("group-a")  # every server at its cap: the least loaded, in rank order
    assert seventh == ranked[0] and router.in_flight(ranked[0]) == 3
    for server in taken + [seventh]:
        router.release(server)
    assert all(router.in_flight(server) == 0 for server in SERVERS)
    assert router.acquire("group-a") == ranked[0], "back on its first choice once it has room"
    assert sum(router.sent.values()) == 8


def test_a_down_server_is_skipped_until_marked_up() -> None:
    router = FleetRouter(SERVERS, per_server_cap=8)
    ranked = hrw_order("episode-1", SERVERS)
    assert router.mark_down(ranked[0]) and not router.mark_down(ranked[0]), "True only when it goes down"
    assert router.down == [ranked[0]] and ranked[0] not in router.live
    assert {router.acquire("episode-1") for _ in range(5)} == {ranked[1]}
    assert router.acquire("episode-1", exclude=[ranked[1]]) == ranked[2], "a retry skips where it failed"
    router.mark_down(ranked[1])
    router.mark_down(ranked[2])
    with pytest.raises(NoServerAvailable):
        router.acquire("episode-1")
    router.mark_up(ranked[0])
    assert router.acquire("episode-1") == ranked[0]


def test_bad_fleets_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        FleetRouter([], per_server_cap=1)
    with pytest.raises(ValueError, match="twice"):
        FleetRouter([SERVERS[0], SERVERS[0]], per_server_cap=1)
    with pytest.raises(ValueError, match="per_server_cap"):
        FleetRouter(SERVERS, per_server_cap=0)


def test_a_group_and_the_turns_of_its_episodes_share_one_key() -> None:
    keys = ConversationKeys()
    prompt = [1, 50, 51, 52, 2]
    other_task = [1, 50, 51, 53, 2]
    group = [keys.key_for(list(prompt)) for _ in range(4)]
    assert len(set(group)) == 1 and group[0] == prompt_key(prompt)
    assert keys.key_for(other_task) != group[0]
    keys.remember(prompt + [60, 61], group[0])  # sample 0 answered [60, 61]
    keys.remember(prompt + [70], group[0])  # sample 1 answered [70]
    assert keys.key_for(prompt + [60, 61, 9, 9, 9]) == group[0], "turn 2: the answer plus the env's reply"
    assert keys.key_for(prompt + [70, 8]) == group[0]
    assert keys.key_for(prompt + [80, 8]) == prompt_key(prompt + [80, 8]), "never answered: its own key"
    conversation = [{"role": "user", "content": "hi"}]
    assert keys.key_for(conversation) == prompt_key(conversation)
    keys.forget()
    assert len(keys) == 0 and keys.key_for(prompt + [60, 61, 9]) != group[0]


def test_remembered_sequences_are_bounded() -> None:
    keys = ConversationKeys(max_sequences=3)
    for i in range(5):
        keys.remember([i, i], f"k{i}")
    assert len(keys) == 3
    assert keys.key_for([0, 0, 5]) == prompt_key([0, 0, 5]) and keys.key_for([4, 4, 5]) == "k4"
