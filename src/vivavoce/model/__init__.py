"""The speech language model over a frozen text LLM backbone."""
