"""Built-in user turns: templates filled from fact tables (tables.py). Bump TEXT_VERSION whenever a table or
template changes, so corpora built from different text never mix."""
