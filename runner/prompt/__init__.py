"""From requests to prompts and back: chat templates applied, tool calls and thinking parsed out of generated text."""
