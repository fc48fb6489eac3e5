"""Commands from people and systems other than mail: page saves and one-click, operator actions.

Each function builds the Decision that handlers.state.apply writes; none reads or writes
anything itself. The transports (worker/) turn wire input into these calls.
"""
