"""The engines, one subpackage per family (`gr/`, `llm/`), and what both share: their configuration, the
process's one compute thread, and how an engine fails."""
