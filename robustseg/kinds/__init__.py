"""The kinds of run, each a small piece on the run engine (robustseg/run/): attack sweeps, patches, probes,
gradient norms."""
