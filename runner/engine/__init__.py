"""llama.cpp through llama-cpp-python: one worker thread per model, batching, sampling, and the
hand-off back to the event loop."""
