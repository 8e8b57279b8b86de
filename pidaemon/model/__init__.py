"""The model: loading and warming the classifier (classifier), its compiled cache (cache), frame
preparation (preprocess) and the check that the installed torch runs on this CPU (torch_compat,
importable with the standard library alone, before torch is)."""
