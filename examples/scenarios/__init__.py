"""A scenario set for `arq eval`: 32 support-agent scenarios, each checked automatically.

In the spirit of the Attentive Reasoning Queries paper, the scenarios test what a
customer-facing agent gets wrong: following a guideline again when its condition comes
back, and not following one whose condition no longer holds (12 `GuidelineMatch`
scenarios); answering only from the facts given, and saying "I don't know." otherwise (10
`FactAnswer` scenarios); and asking for a missing required argument instead of calling a
tool with a guess (10 `ToolDecision` scenarios). `schema.py` holds the three schemas with
their checks (`arq.verbatim_in`, `arq.one_of`, `arq.covers` and `@arq.check` rules that read
the context) and the scorers; `scenarios.jsonl` holds one scenario per line: its `id`, the
`schema` it runs with, the `context`, the `expect`ed answer that the scorers compare with,
a `note` on what it tests, and a hand-written correct output (`reference`). Run all four
strategies twice on the embedded model, from the repository's root:

    python -m examples.scenarios --out eval-report

which is the same as

    arq eval examples/scenarios/schema.py:SCHEMAS examples/scenarios/scenarios.jsonl \\
        --scorers examples/scenarios/schema.py:SCORERS \\
        --strategies arq,arq-unchecked,cot,direct --repeats 2 --local --out eval-report

Any option of `arq eval` may be added (`--repeats 3`, `--base-url URL --model M`, ...). On
2 busy CPU cores `--limit 18` (6 scenarios of each kind) took 23 minutes; the whole set
would take about 40. docs/eval.md shows the results on SmolLM2-135M.
"""
