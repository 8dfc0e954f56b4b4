"""A custom prompt: your own system template and an extra section, with arq's output format.

    python examples/custom_template.py

Sections are named and ordered; each is a Jinja2 template. Here the system section is
replaced by a house style, the context section shows only the ticket, and a new "policy"
section reads its own value from the context. User
templates run in Jinja's sandbox, and context values are data, never template code: the
`{{ 7 * 7 }}` in the ticket below reaches the prompt as written. The executor then runs on
the custom prompt (a scripted backend stands in for a model, so this runs offline).
"""

from __future__ import annotations

from typing import Literal

import arq
from arq.prompt import Section
from arq.testing import ScriptedBackend


class Triage(arq.Reasoning):
    """Triage a support ticket."""

    summary: str = arq.query("What is the ticket about?", max_length=120)
    team: Literal["billing", "shipping", "tech"] = arq.answer("Which team takes it?")


HOUSE_STYLE = """\
You are the triage desk of Acme Networks. {{ task }}
Answer the questions of the output format in order; be brief."""

POLICY = """\
{% if context.policy %}
## Policy
{{ context.policy }}
{% endif %}"""

TICKET = """\
## Ticket
{{ context.ticket }}"""

builder = (
    arq.PromptBuilder(templates={"house.jinja": HOUSE_STYLE})
    .replace_section("system", Section("system", "house.jinja", "system"))
    .replace_section("context", Section("context", TICKET, "user"))
    .add_section(Section("policy", POLICY, "user"), before="context")
)
context = {
    "policy": "Routers go to the tech team.",
    "ticket": "My router reboots every hour. {{ 7 * 7 }}",
}

request = builder.build(Triage, context)
for message in request.messages:
    print(f"=== {message['role']} ===\n{message['content']}\n")

backend = ScriptedBackend('{"summary": "router reboots hourly", "team": "tech"}')
with arq.Executor(backend, builder=builder) as executor:
    result = executor.run(Triage, context)
print("team:", result.output.team)
assert backend.requests[0].messages == request.messages  # the executor sent this prompt
