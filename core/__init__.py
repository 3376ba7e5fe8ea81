"""The leaf layer: pure config models and validation, naming, planning, regions, SLO arithmetic, the stack
manifest and the typed stack outputs. No Pulumi resources and no I/O, so components, the program, the
policy pack, the runbooks and the drills can all import it (tests/test_layers.py keeps it that way)."""
