"""Principle-list prompts, the FIFO population, lineage, and the prompts.jsonl round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from espl.evolution.population import Population
from espl.evolution.prompt_log import PromptLog, load_prompt_log
from espl.evolution.system_prompt import (
    CROSSOVER_OPERATOR,
    MUTATION_OPERATOR,
    PromptLimits,
    PromptParseError,
    RatingPoint,
    SystemPrompt,
    cap_words,
    parse_principles,
    render_principles,
    word_count,
)
from espl.evolution.rating import RatingSystem

# -- the principle list ---------------------------------------------------------------------


def test_render_numbers_principles_from_zero_under_the_header() -> None:
    text = render_principles(["Check units.", "Verify the   final\nanswer."], header="Follow these:")
    assert text == "Follow these:\nG0: Check units.\nG1: Verify the final answer."


def test_parse_renumbers_and_reads_the_header() -> None:
    parsed = parse_principles("Guidelines\nG3: first\nG7: second")
    assert parsed.header == "Guidelines"
    assert parsed.principles == ("first", "second")
    assert render_principles(parsed.principles) == "G0: first\nG1: second"


@pytest.mark.parametrize(
    "line",
    ["G0: rule", "G0. rule", "[G0] rule", "**G0:** rule", "**G0**: rule", "- G0: rule", "1. rule", "1) rule"],
)
def test_parse_accepts_common_list_styles(line: str) -> None:
    assert parse_principles(line).principles == ("rule",)


def test_parse_joins_wrapped_lines_and_keeps_inner_enumerations() -> None:
    text = "G0: Plan the search:\n1. decompose the question\n2. search each hop\nG1: Answer briefly."
    parsed = parse_principles(text)
    assert parsed.principles == (
        "Plan the search: 1. decompose the question 2. search each hop",
        "Answer briefly.",
    )


def test_parse_without_any_principle_raises() -> None:
    with pytest.raises(PromptParseError):
        parse_principles("I could not think of any improvement.")
    with pytest.raises(PromptParseError):
        parse_principles("")


principle_text = (
    st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=60)
    .map(lambda s: " ".join(s.split()))
    .filter(bool)
)


@given(st.lists(principle_text, min_size=1, max_size=8), st.sampled_from([None, "Principles to follow", "Rules"]))
def test_render_then_parse_round_trips(principles: list[str], header: str | None) -> None:
    parsed = parse_principles(render_principles(principles, header=header))
    assert parsed.principles == tuple(principles)
    assert parsed.header == header


def test_word_cap_keeps_the_first_words() -> None:
    long = " ".join(f"w{i}" for i in range(40))
    assert word_count(cap_words(long)) == 32
    assert cap_words(long).startswith("w0 w1") and cap_words(long).endswith("w31")
    assert cap_words("  a   b ") == "a b"
    with pytest.raises(ValueError):
        cap_words("a", 0)


def test_limits_truncate_principles_and_drop_from_the_end() -> None:
    limits = PromptLimits(max_principle_words=3, max_total_words=5, max_principles=10)
    assert limits.apply(["one two three four", "five six", "seven", ""]) == ("one two three", "five six")
    assert limits.violations(["one two three four", "a b"]) == [
        "G0 has 4 words (cap 3)",
        "6 words in total (cap 5)",
    ]
    assert PromptLimits(max_principles=1).apply(["a", "b"]) == ("a",)
    assert PromptLimits().violations(["short"]) == []


def test_prompt_record_round_trip() -> None:
    prompt = SystemPrompt(
        id="p0003",
        principles=("a", "b"),
        parents=("p0001", "p0002"),
        operator=CROSSOVER_OPERATOR,
        created_step=4,
        header="Rules",
        rating_history=[RatingPoint(4, 24.0, 5.0, "crossover"), RatingPoint(5, 26.0, 4.5)],
        metadata={"edits": 2},
    )
    record = json.loads(json.dumps(prompt.to_record()))
    assert SystemPrompt.from_record(record) == prompt
    assert prompt.text == "Rules\nG0: a\nG1: b"
    assert (prompt.mu, prompt.sigma) == (26.0, 4.5)


def test_unrated_prompt_has_no_mu() -> None:
    with pytest.raises(LookupError):
        _ = SystemPrompt(id="x", principles=("a",)).mu


# -- the population ----------------------------------------------------------------------------


def grow(population: Population, count: int, system: RatingSystem | None = None) -> list[str]:
    """Add a seed, then a chain of mutations, one per step."""
    system = system or RatingSystem()
    ids = []
    for step in range(count):
        if not len(population):
            prompt = population.create([f"rule {step}"], step=step, rating=system.fresh())
        else:
            parent = population.newest
            prompt = population.create(
                [*parent.principles, f"rule {step}"],
                step=step,
                operator=MUTATION_OPERATOR,
                parents=[parent.id],
                rating=system.mutation_child(parent.rating),
            )
        ids.append(prompt.id)
    return ids


def test_ids_are_sequential_and_newest_is_last() -> None:
    population = Population()
    ids = grow(population, 3)
    assert ids == ["p0000", "p0001", "p0002"]
    assert population.newest.id == "p0002"
    assert population.get("p0001").parents == ("p0000",)
    assert population.get("p0001").rating.event == MUTATION_OPERATOR


def test_fifo_cap_evicts_the_oldest_but_keeps_them_in_the_lineage() -> None:
    population = Population(capacity=3, window_size=2)
    grow(population, 5)
    assert population.member_ids == ["p0002", "p0003", "p0004"]
    assert "p0000" not in population and "p0004" in population
    assert population.get("p0000").evicted_step == 3
    assert population.get("p0002").evicted_step is None
    assert population.ancestors("p0004") == ["p0003", "p0002", "p0001", "p0000"]
    assert [p.id for p in population.archive()] == [f"p000{i}" for i in range(5)]


def test_add_reports_evictions() -> None:
    population = Population(capacity=1)
    assert population.add(SystemPrompt(id="a", principles=("x",))) == []
    assert population.add(SystemPrompt(id="b", principles=("y",), created_step=1)) == ["a"]


def test_window_holds_the_newest_k() -> None:
    population = Population(window_size=3)
    grow(population, 5)
    assert population.window() == ["p0002", "p0003", "p0004"]
    assert population.window(10) == population.member_ids
    assert population.window(0) == []


def test_add_rejects_duplicate_ids_and_unknown_parents() -> None:
    population = Population()
    population.add(SystemPrompt(id="a", principles=("x",)))
    with pytest.raises(ValueError, match="already"):
        population.add(SystemPrompt(id="a", principles=("y",)))
    with pytest.raises(ValueError, match="unknown parent"):
        population.add(SystemPrompt(id="b", principles=("y",), parents=("zzz",)))
    with pytest.raises(KeyError):
        population.get("zzz")


def test_ids_continue_after_externally_named_prompts() -> None:
    population = Population()
    population.add(SystemPrompt(id="p0041", principles=("x",)))
    assert population.new_id() == "p0042"


def test_crossover_lineage_is_a_dag() -> None:
    population = Population()
    a = population.create(["a"], step=0)
    b = population.create(["b"], step=0)
    m = population.create(["a2"], step=1, operator=MUTATION_OPERATOR, parents=[a.id])
    c = population.create(["c"], step=2, operator=CROSSOVER_OPERATOR, parents=[m.id, b.id])
    d = population.create(["d"], step=3, operator=CROSSOVER_OPERATOR, parents=[c.id, a.id])
    assert population.ancestors(d.id) == [c.id, a.id, m.id, b.id]
    assert sorted(population.lineage_edges(d.id)) == sorted(
        [(c.id, d.id), (a.id, d.id), (m.id, c.id), (b.id, c.id), (a.id, m.id)]
    )
    assert population.ancestors(a.id) == []


def test_ratings_view_skips_unrated_and_tracks_the_latest() -> None:
    population = Population()
    population.create(["a"], step=0)
    rated = population.create(["b"], step=0, rating=RatingPoint(0, 25.0, 8.0))
    population.record_ratings(1, {rated.id: RatingPoint(1, 27.0, 6.0)})
    assert population.ratings() == {rated.id: RatingPoint(1, 27.0, 6.0, "match")}
    assert len(population.get(rated.id).rating_history) == 2


def test_snapshot_restore_undoes_changes() -> None:
    population = Population(capacity=4)
    grow(population, 3)
    snapshot = population.snapshot()
    population.record_rating("p0001", 9, RatingPoint(9, 40.0, 1.0))
    grow(population, 3)
    population.restore(snapshot)
    assert population.member_ids == ["p0000", "p0001", "p0002"]
    assert population.get("p0001").rating.mu == pytest.approx(25.0)
    assert population.new_id() == "p0003"
    assert Population.from_state(json.loads(json.dumps(population.to_state()))).to_state() == population.to_state()


def test_empty_population_has_no_newest() -> None:
    with pytest.raises(LookupError):
        _ = Population().newest
    with pytest.raises(ValueError):
        Population(capacity=0)


# -- prompts.jsonl -------------------------------------------------------------------------------


def run_steps(path: Path, steps: int, capacity: int = 3) -> Population:
    """A miniature E-SPL loop: a match and a mutation child each step, logged every step."""
    system = RatingSystem()
    population = Population(capacity=capacity, window_size=2)
    log = PromptLog(path)
    population.create(["seed rule"], step=0, rating=system.fresh())
    log.append_step(population, 0)
    for step in range(1, steps + 1):
        window = population.window()
        scores = [(prompt_id, 0.1 * (i + step % 3)) for i, prompt_id in enumerate(window)]
        outcome = system.play(scores, population.ratings(window))
        if outcome.played:
            population.record_ratings(step, outcome.after)
        parent = population.newest
        population.create(
            [*parent.principles, f"rule {step}"],
            step=step,
            operator=MUTATION_OPERATOR,
            parents=[parent.id],
            rating=system.mutation_child(parent.rating),
        )
        log.append_step(population, step)
    return population


def test_log_rebuilds_population_ratings_and_evicted_lineage(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    live = run_steps(path, steps=6, capacity=3)
    rebuilt = load_prompt_log(path)
    assert rebuilt.to_state() == live.to_state()
    assert rebuilt.member_ids == ["p0004", "p0005", "p0006"]
    assert rebuilt.ancestors("p0006") == ["p0005", "p0004", "p0003", "p0002", "p0001", "p0000"]
    assert rebuilt.get("p0000").evicted_step == 3
    assert len(rebuilt.get("p0004").rating_history) > 1
    lines = path.read_text().splitlines()
    assert len(lines) == 7
    assert all(len(json.loads(line)["new_prompts"]) == 1 for line in lines)


def test_log_replays_up_to_a_step(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    run_steps(path, steps=4)
    early = load_prompt_log(path, up_to_step=2)
    assert early.newest.id == "p0002"
    assert all(point.step <= 2 for p in early.archive() for point in p.rating_history)


def test_torn_last_line_is_ignored_and_resume_continues(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    live = run_steps(path, steps=3)
    complete = path.read_text()
    path.write_text(complete + '{"step": 4, "new_pr')
    assert load_prompt_log(path).to_state() == live.to_state()
    log = PromptLog.open(path)
    assert path.read_text() == complete
    live.create(["extra"], step=4, parents=[live.newest.id], rating=RatingPoint(4, 25.0, 8.0))
    record = log.append_step(live, 4)
    assert [p["id"] for p in record["new_prompts"]] == ["p0004"]
    assert record["rating_points"] == {}
    assert load_prompt_log(path).to_state() == live.to_state()


def test_malformed_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    run_steps(path, steps=2)
    lines = path.read_text().splitlines()
    lines[1] = "not json"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=":2:"):
        load_prompt_log(path)


def test_empty_log_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text("")
    with pytest.raises(ValueError, match="no step"):
        load_prompt_log(path)
