"""Responses ⇄ ollama translation, without a server: ollama's input items and defaults, and the
stream's events for answers the scripted model cannot give (text before a call, a failure)."""

from __future__ import annotations

import base64

import pytest

from runner.http.openai_wire import OpenAIError
from runner.http.responses_wire import ResponsesStream, responses_plan, to_response

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
CALL = {"id": "call_abc", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}


def _error(body: dict) -> OpenAIError:
    with pytest.raises(OpenAIError) as exc:
        responses_plan(body)
    return exc.value


def test_string_input_instructions_and_defaults() -> None:
    plan = responses_plan({"model": "m", "input": "hi", "instructions": "Be brief."})
    assert plan.request == {
        "model": "m", "options": {"temperature": 1.0}, "stream": False,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    }
    assert (plan.stream, plan.force_tools, plan.echo["top_p"], plan.echo["tool_choice"]) == (False, None, 1.0, "auto")
    plan = responses_plan({"model": "m", "input": "hi", "temperature": 0, "top_p": 0.5, "max_output_tokens": 9,
                           "stream": True, "reasoning": {"effort": "minimal"},
                           "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}})
    assert plan.request["options"] == {"temperature": 0, "top_p": 0.5, "num_predict": 9}
    assert (plan.request["think"], plan.request["format"], plan.stream) == ("low", {"type": "object"}, True)
    assert responses_plan({"model": "m", "text": {"format": {"type": "json_object"}}}).request["format"] == "json"
    assert _error({"model": "m", "reasoning": {"effort": "huge"}}).message.startswith("invalid reasoning value")
    assert _error({"model": "m", "input": 5}).status == 400


def test_input_items_become_ollama_messages() -> None:
    plan = responses_plan({"model": "m", "input": [
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is "}, {"type": "input_text", "text": "this?"},
            {"type": "input_image", "detail": "auto", "image_url": f"data:image/png;base64,{PNG}"},
            {"type": "input_image", "detail": "auto", "file_id": "file-1"},
        ]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "hmm"},
        {"type": "function_call", "call_id": "call_abc", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "checking"}]},
        {"type": "function_call_output", "call_id": "call_abc", "output": [{"type": "input_text", "text": "sunny"}]},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "done"}]},
    ]})
    assert plan.request["messages"] == [
        {"role": "developer", "content": "rules"},
        {"role": "user", "content": "What is this?", "images": [PNG]},
        # the assistant message replayed between the call and its output joins the call's message
        {"role": "assistant", "content": "checking", "thinking": "hmm", "tool_calls": [
            {"id": "call_abc", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "call_abc", "tool_name": "get_weather"},
        {"role": "assistant", "content": "", "thinking": "done"},  # trailing reasoning stays
    ]


@pytest.mark.parametrize(("item", "status", "message"), [
    ({"type": "telepathy"}, 400, 'input[0]: unknown input item type: "telepathy"'),
    ({"content": "no role"}, 400, "input[0]: input item missing required 'type' field"),
    ({"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}, 400,
     "file inputs are not currently supported"),
    ({"role": "user", "content": [{"type": "input_audio"}]}, 400, "input[0]: content[0]: unknown content type: "
                                                                  "input_audio"),
    ({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{oops"}, 400, None),
    ({"type": "function_call_output", "call_id": "c", "output": 5}, 400, "input[0]: output must be a string or array"),
])
def test_bad_items(item: dict, status: int, message: str | None) -> None:
    error = _error({"model": "m", "input": [item]})
    assert error.status == status
    assert message is None or error.message == message


def test_tools_and_tool_choice() -> None:
    namespace = {"type": "namespace", "name": "weather", "tools": [TOOL, {**TOOL, "name": "weather.forecast"}]}
    plan = responses_plan({"model": "m", "tools": [TOOL, namespace], "tool_choice": "required"})
    names = [tool["function"]["name"] for tool in plan.request["tools"]]
    assert names == ["get_weather", "weather.get_weather", "weather.forecast"]
    assert plan.force_tools == names and plan.echo["tool_choice"] == "required"
    assert plan.echo["tools"][0] == {"type": "function", "name": "get_weather", "description": None, "strict": None,
                                     "parameters": {"type": "object"}}
    named = responses_plan({"model": "m", "tools": [TOOL], "tool_choice": {"type": "function", "name": "get_weather"}})
    assert named.force_tools == ["get_weather"]
    assert "tools" not in responses_plan({"model": "m", "tools": [TOOL], "tool_choice": "none"}).request
    assert _error({"model": "m", "tool_choice": "required"}).param == "tool_choice"
    assert _error({"model": "m", "tools": [{"type": "web_search"}]}).status == 403


def test_text_before_a_call_is_its_own_item() -> None:
    plan = responses_plan({"model": "m", "input": "hi", "tools": [TOOL]})
    answer = to_response(plan, "resp_1", {"message": {"content": "Let me check.", "tool_calls": [CALL]},
                                          "prompt_eval_count": 5, "eval_count": 3})
    assert [item["type"] for item in answer["output"]] == ["message", "function_call"]
    assert answer["output"][1] == {"id": "fc_resp_1_0", "type": "function_call", "status": "completed",
                                   "call_id": "call_abc", "name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert answer["usage"]["total_tokens"] == 8

    stream = ResponsesStream(plan, "resp_1")
    events = [*stream.feed({"message": {"content": "Let me check."}}),
              *stream.feed({"message": {"content": "", "tool_calls": [CALL]}}),
              *stream.feed({"message": {"content": ""}, "done": True, "prompt_eval_count": 5, "eval_count": 3})]
    added = [(data["output_index"], data["item"]["type"]) for kind, data in events
             if kind == "response.output_item.added"]
    done = [(data["output_index"], data["item"]["type"]) for kind, data in events
            if kind == "response.output_item.done"]
    assert added == done == [(0, "message"), (1, "function_call")]
    completed = events[-1][1]["response"]
    assert [item["type"] for item in completed["output"]] == ["message", "function_call"]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))


def test_a_failure_mid_stream_is_response_failed() -> None:
    stream = ResponsesStream(responses_plan({"model": "m", "input": "hi"}), "resp_2")
    stream.feed({"message": {"content": "Hel"}})
    ((kind, data),) = stream.fail(500, "llama runner process has terminated: signal: killed")
    assert kind == "response.failed" and data["response"]["status"] == "failed"
    assert data["response"]["error"] == {"code": "server_error",
                                         "message": "llama runner process has terminated: signal: killed"}
