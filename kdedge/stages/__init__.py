"""Pipeline stages. Each reads the run directory (manifest + files) and writes its own outputs."""
