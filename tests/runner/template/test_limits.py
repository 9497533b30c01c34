"""Template execution is bounded: each limit stops a runaway template with TemplateLimitError."""

from __future__ import annotations

import pytest

from runner.template.errors import TemplateError
from runner.template.exec import Limits, TemplateLimitError
from runner.template.template import Template


@pytest.mark.parametrize(
    ("source", "limits", "message"),
    [
        ("{{ range $i := 1000000000 }}x{{ end }}", Limits(range_iterations=100), "range exceeded 100 iterations"),
        ("{{ range 50 }}{{ range 50 }}{{ . }}{{ end }}{{ end }}", Limits(steps=1000), "exceeded 1000 steps"),
        ("{{ range 100 }}{{ printf \"%99s\" \"\" }}{{ end }}", Limits(output=1000), "output exceeded 1000 characters"),
        ('{{ $x := "ab" }}{{ range 30 }}{{ $x = printf "%s%s" $x $x }}{{ end }}', Limits(output=1000),
         "a value exceeded 1000 characters"),
        ("{{ range 1000000 }}{{ end }}", Limits(seconds=0), "exceeded 0 seconds"),
    ],
)
def test_each_limit_stops_a_runaway_template(source: str, limits: Limits, message: str) -> None:
    with pytest.raises(TemplateLimitError, match=message) as caught:
        Template.parse(source).execute({}, limits)
    assert isinstance(caught.value, TemplateError)  # callers that know only TemplateError still catch it
    assert "executing" in str(caught.value)  # says where, like Go's execution errors


def test_templates_within_the_limits_run_as_before() -> None:
    template = Template.parse("{{ range $i := 3 }}{{ $i }}{{ end }}")
    assert template.execute({"Response": ""}, Limits(range_iterations=3)) == "012"
