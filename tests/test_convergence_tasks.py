"""The convergence benchmark's task family: deterministic, valid when right, failing where wrong."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, timedelta
from typing import TYPE_CHECKING

import pytest

import arq
from tests.bench_scripts import bench_script

if TYPE_CHECKING:  # the type checker reads bench/ as top-level modules
    import convergence_tasks as tasks
else:
    tasks = bench_script("convergence_tasks")

TASKS_PER_N = 30


def test_same_seed_same_task_other_seed_other_task() -> None:
    for n in tasks.NS:
        one, again, other = tasks.make_task(n, 3), tasks.make_task(n, 3), tasks.make_task(n, 4)
        assert one.facts == again.facts
        assert one.context == again.context
        assert arq.json_schema(one.schema) == arq.json_schema(again.schema)
        assert one.facts != other.facts


def test_every_task_has_n_steps_in_record_order_with_kinds_in_equal_shares() -> None:
    for n in tasks.NS:
        for task in tasks.make_tasks(n, TASKS_PER_N):
            names = [step.name for step in arq.steps(task.schema)]
            assert names == list(task.truth)
            assert len(names) == n
            labels = list(tasks.record_values(task.context["record"]))
            assert labels == [fact.label for fact in task.facts]
            counts = Counter(task.kinds.values())
            assert max(counts.values()) - min(counts.get(k, 0) for k in tasks.KINDS) <= 1
            assert arq.steps(task.schema)[-1].is_answer


@pytest.mark.parametrize("n", tasks.NS)
def test_the_truth_validates(n: int) -> None:
    for task in tasks.make_tasks(n, TASKS_PER_N):
        output = arq.validate_output(task.schema, task.truth, context=task.context)
        assert output.model_dump() == task.truth


def wrong_value(task: tasks.Task, key: str) -> str | int:
    """A value of the right form that the record does not support."""
    fact = next(f for f in task.facts if f.key == key)
    if fact.kind == "name":
        first, last = str(fact.truth).split()
        return f"{'Anna' if first != 'Anna' else 'Maria'} {last}"  # not in the record
    if fact.kind == "id":
        return str(next(i for i in task.context["ids"] if i != fact.truth))  # a distractor
    if fact.kind == "date":
        return (date.fromisoformat(str(fact.truth)) + timedelta(days=1)).isoformat()
    low, high = (int(word) for word in fact.text.split()[1:4:2])
    assert low <= int(fact.truth) <= high
    return high + 1


@pytest.mark.parametrize("kind", tasks.KINDS)
def test_a_wrong_value_fails_at_its_own_step(kind: str) -> None:
    for task in tasks.make_tasks(16, 10):
        for fact in (f for f in task.facts if f.kind == kind):
            answer = {**task.truth, fact.key: wrong_value(task, fact.key)}
            with pytest.raises(arq.StepError) as caught:
                arq.validate_output(task.schema, answer, context=task.context)
            assert caught.value.step == fact.key
            # checked step by step, every other step still passes
            checker = arq.StepChecker(task.schema, context=task.context)
            failed = []
            for key, value in answer.items():
                try:
                    checker.accept(key, value)
                except arq.StepError as error:
                    failed.append(error.step)
            assert failed == [fact.key]


def test_another_name_from_the_record_is_quoted_but_still_wrong() -> None:
    named = (t for t in tasks.make_tasks(32, 10) if sum(k == "name" for k in t.kinds.values()) > 1)
    task = next(named)
    first, second = [f for f in task.facts if f.kind == "name"][:2]
    answer = {**task.truth, first.key: second.truth}
    with pytest.raises(arq.StepError, match=f"not the name on the record's '{first.label}'"):
        arq.validate_output(task.schema, answer, context=task.context)


def test_checks_read_the_context() -> None:
    task, other = tasks.make_task(8, 0), tasks.make_task(8, 1)
    with pytest.raises(arq.StepError):
        arq.validate_output(task.schema, task.truth, context=other.context)
    with pytest.raises(arq.ContextError):
        arq.validate_output(task.schema, task.truth, context={})


def test_patterns_reach_the_json_schema_and_answers_stay_short() -> None:
    for task in tasks.make_tasks(32, TASKS_PER_N):
        properties = arq.json_schema(task.schema)["properties"]
        for fact in task.facts:
            prop = properties[fact.key]
            if fact.kind == "number":
                assert (prop["type"], prop["minimum"], prop["maximum"]) == ("integer", 0, 999)
            else:
                assert "pattern" in prop
            assert "+" not in prop.get("pattern", "")  # bounded, so a grammar ends the value
        # every step has a token budget: a value that runs on is cut where it goes wrong
        assert all(step.max_chunks for step in arq.steps(task.schema))
        # about a dozen tokens a step: well within the benchmark's max_tokens
        assert len(json.dumps(task.truth)) < 32 * 40


def test_out_of_range_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="steps"):
        tasks.make_task(0, 0)
    with pytest.raises(ValueError, match="steps"):
        tasks.make_task(49, 0)
